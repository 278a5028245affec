package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLint(t *testing.T) {
	tests := []struct {
		name       string
		dockerfile string
		want       []string // substrings of findings; none means clean
	}{
		{"clean", "FROM golang:1.26 AS build\nENV CGO_ENABLED=0\nRUN go build ./...\nFROM gcr.io/distroless/static-debian12:nonroot\nCOPY --from=build /x /x\nUSER 65532:65532\n", nil},
		{"latest", "FROM golang:latest AS build\nENV CGO_ENABLED=0\nFROM scratch:1\nUSER 1\n", []string{"pin a tag"}},
		{"untagged", "FROM golang AS build\nENV CGO_ENABLED=0\nFROM build\nUSER 1\n", []string{"FROM golang: pin"}},
		{"root final", "FROM golang:1.26 AS build\nENV CGO_ENABLED=0\nFROM debian:12\n", []string{"non-root USER"}},
		{"explicit root", "FROM golang:1.26 AS build\nENV CGO_ENABLED=0\nFROM debian:12\nUSER root\n", []string{"non-root USER"}},
		{"remote add", "FROM golang:1.26 AS build\nENV CGO_ENABLED=0\nADD https://example.invalid/x /x\nFROM debian:12\nUSER 1\n", []string{"no remote downloads"}},
		{"cgo", "FROM golang:1.26 AS build\nRUN go build\nFROM debian:12\nUSER 1\n", []string{"CGO_ENABLED=0"}},
		{"buildkit casing rule", "FROM golang:1.26 as build\nENV CGO_ENABLED=0\nFROM debian:12\nUSER 1\n", []string{"FromAsCasing"}},
		{"buildkit maintainer rule", "FROM golang:1.26 AS build\nMAINTAINER someone\nENV CGO_ENABLED=0\nFROM debian:12\nUSER 1\n", []string{"MaintainerDeprecated"}},
		{"buildkit stage name rule", "FROM golang:1.26 AS Build\nENV CGO_ENABLED=0\nFROM debian:12\nUSER 1\n", []string{"StageNameCasing"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "Dockerfile")
			if err := os.WriteFile(path, []byte(tc.dockerfile), 0o644); err != nil {
				t.Fatal(err)
			}
			findings, err := lint(path)
			if err != nil {
				t.Fatal(err)
			}
			all := strings.Join(findings, "\n")
			if len(tc.want) == 0 && len(findings) > 0 {
				t.Fatalf("want no findings, got:\n%s", all)
			}
			for _, w := range tc.want {
				if !strings.Contains(all, w) {
					t.Errorf("want a finding containing %q, got:\n%s", w, all)
				}
			}
		})
	}
}

// TestRepositoryDockerfile lints the project's own Dockerfile.
func TestRepositoryDockerfile(t *testing.T) {
	findings, err := lint("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	if len(findings) > 0 {
		t.Fatalf("Dockerfile findings:\n%s", strings.Join(findings, "\n"))
	}
}
