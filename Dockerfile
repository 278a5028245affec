# syntax=docker/dockerfile:1
# One image for both components: `zerohop controller` and `zerohop speaker`.
# The BPF objects are the committed bpf2go output, so no clang is needed.

ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-mod=readonly
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
ARG VERSION=v0.0.0-dev
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    go build -trimpath -ldflags "-s -w -X github.com/zerohop/zerohop/internal/version.Version=${VERSION}" \
      -o /out/zerohop ./cmd/zerohop

# distroless/static has no shell and no package manager; nonroot is uid
# 65532. The speaker's DaemonSet runs it as root with the capabilities it
# needs (BPF, NET_ADMIN, NET_RAW), which a non-root uid could not use.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/zerohop /usr/local/bin/zerohop
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/zerohop"]
