// Command dockerlint parses a Dockerfile with BuildKit's parser, runs
// BuildKit's lint rules (the ones `docker build --check` runs) and zerohop's
// own image rules, and exits non-zero on any finding:
//
//   - every FROM names a tag or digest, never latest;
//   - the final stage runs as a non-root USER;
//   - no ADD of remote URLs (downloads must be pinned and checked);
//   - the build stage sets CGO_ENABLED=0 so the binary is static.
package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: dockerlint Dockerfile")
		os.Exit(2)
	}
	findings, err := lint(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "dockerlint:", err)
		os.Exit(2)
	}
	for _, f := range findings {
		fmt.Println(f)
	}
	if len(findings) > 0 {
		os.Exit(1)
	}
	fmt.Printf("dockerlint: %s: no findings\n", os.Args[1])
}

func lint(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var findings []string
	res, err := parser.Parse(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, w := range res.Warnings {
		findings = append(findings, fmt.Sprintf("%s:%d: %s", path, w.Location.Start.Line, w.Short))
	}
	lin := linter.New(&linter.Config{
		Warn: func(rule, description, url, msg string, loc []parser.Range) {
			line := 0
			if len(loc) > 0 {
				line = loc[0].Start.Line
			}
			findings = append(findings, fmt.Sprintf("%s:%d: %s: %s (%s)", path, line, rule, msg, url))
		},
	})
	stages, _, err := instructions.Parse(res.AST, lin)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(stages) == 0 {
		return append(findings, path+": no stages"), nil
	}
	static := false
	stageNames := map[string]bool{}
	for _, st := range stages {
		if !stageNames[strings.ToLower(st.BaseName)] && !pinned(st.BaseName) {
			findings = append(findings, fmt.Sprintf("%s:%d: FROM %s: pin a tag or digest (not latest)", path, st.Location[0].Start.Line, st.BaseName))
		}
		if st.Name != "" {
			stageNames[strings.ToLower(st.Name)] = true
		}
		for _, cmd := range st.Commands {
			switch c := cmd.(type) {
			case *instructions.AddCommand:
				for _, src := range c.SourcePaths {
					if strings.Contains(src, "://") {
						findings = append(findings, fmt.Sprintf("%s:%d: ADD %s: no remote downloads", path, c.Location()[0].Start.Line, src))
					}
				}
			case *instructions.EnvCommand:
				for _, kv := range c.Env {
					if kv.Key == "CGO_ENABLED" && kv.Value == "0" {
						static = true
					}
				}
			case *instructions.RunCommand:
				if strings.Contains(strings.Join(c.CmdLine, " "), "CGO_ENABLED=0") {
					static = true
				}
			}
		}
	}
	if !static {
		findings = append(findings, path+": no stage sets CGO_ENABLED=0: the binary would not be static")
	}
	final := stages[len(stages)-1]
	user := ""
	for _, cmd := range final.Commands {
		if u, ok := cmd.(*instructions.UserCommand); ok {
			user = u.User
		}
	}
	if user == "" || user == "root" || user == "0" || strings.HasPrefix(user, "0:") {
		findings = append(findings, fmt.Sprintf("%s: final stage %q must set a non-root USER", path, final.Name))
	}
	return findings, nil
}

// pinned reports whether an image reference names a tag or digest other
// than latest.
func pinned(ref string) bool {
	if strings.Contains(ref, "@sha256:") {
		return true
	}
	name := ref[strings.LastIndex(ref, "/")+1:]
	i := strings.LastIndex(name, ":")
	return i >= 0 && name[i+1:] != "latest" && name[i+1:] != ""
}
