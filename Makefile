# zerohop's build. `make test` and `make lab` start from a fresh Debian
# machine: both install what they need first (hack/deps.sh), caching every
# download and build under $(HOME)/.cache/zerohop.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build

ZEROHOP_CACHE ?= $(HOME)/.cache/zerohop
export GOMODCACHE ?= $(ZEROHOP_CACHE)/go/mod
export GOCACHE ?= $(ZEROHOP_CACHE)/go/build
export GOLANGCI_LINT_CACHE ?= $(ZEROHOP_CACHE)/golangci-lint
export GOFLAGS ?= -mod=readonly
BIN := $(ZEROHOP_CACHE)/bin
export ZEROHOP_BIN := $(BIN)
GO ?= go
CONTROLLER_GEN := $(BIN)/controller-gen
GOLANGCI_LINT := $(BIN)/golangci-lint

# Fragments in mk/ add their own targets and append to these lists.
# TEST_TARGETS run, in order, after the common checks in `make test`;
# GENERATE_TARGETS run in `make generate`; TEST_EXCLUDE_PKGS are packages
# (regular expressions over import paths) that test-go leaves to a
# fragment's own target.
TEST_TARGETS :=
GENERATE_TARGETS :=
TEST_EXCLUDE_PKGS :=
-include mk/*.mk

.PHONY: build deps generate generate-api generate-check vet lint fmt-check \
	test test-go test-crd test-apiserver test-chart image-check clean

build:
	$(GO) build -o bin/zerohop ./cmd/zerohop

deps:
	hack/deps.sh

generate: generate-api $(GENERATE_TARGETS)

generate-api:
	$(CONTROLLER_GEN) object paths=./config/... crd output:crd:artifacts:config=config/crd
	rm -f charts/zerohop/crds/*.yaml && cp config/crd/*.yaml charts/zerohop/crds/

# Regenerates everything and fails if that changed a committed file or
# added an untracked one: generated files must be committed fresh.
generate-check: generate
	@if ! git diff --quiet -- . || [[ -n "$$(git ls-files --others --exclude-standard)" ]]; then \
		echo "generated files are stale: run 'make generate' and commit" >&2; \
		git status --short >&2; git diff --stat >&2; exit 1; \
	fi
	@echo "generate-check: generated files are up to date"

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); \
	if [[ -n "$$out" ]]; then echo "gofmt needed:" >&2; echo "$$out" >&2; exit 1; fi

vet:
	$(GO) vet ./...

lint:
	$(GOLANGCI_LINT) run ./...

# Unit and integration tests (the latter start a real etcd and
# kube-apiserver). Fragments' packages are left to their own targets.
test-go:
	pkgs=$$($(GO) list ./... | { grep -Ev '$(subst $(eval) ,|,$(strip $(TEST_EXCLUDE_PKGS) ^$$))' || true; }); \
	$(GO) test -count=1 -timeout 15m $$pkgs

test-crd:
	$(GO) test -count=1 -run 'TestCRDValidation' -v ./config/... | grep -E '^(=== RUN|--- |ok|FAIL|PASS)' | grep -v '=== RUN'

test-apiserver:
	$(GO) test -count=1 ./internal/apiserver/...

# The Dockerfile, checked without a Docker engine.
image-check:
	hack/image-check.sh

# Everything CI runs: `.ci/run` is `make test`.
# Each step prints how long it took, so a slow run shows where.
test: deps
	@t0=$$(date +%s); for t in generate-check "fmt-check vet lint image-check" test-go $(TEST_TARGETS); do \
		s=$$(date +%s); $(MAKE) --no-print-directory $$t; \
		echo "make test: $$t took $$(( $$(date +%s) - s ))s ($$(( $$(date +%s) - t0 ))s so far)"; \
	done
	@echo "make test: all passed"

clean:
	rm -rf bin
