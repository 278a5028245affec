package metallbimport

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// Level says how much an issue matters to the user.
type Level string

const (
	// Untranslated: the field (or the whole object) has no zerohop
	// equivalent and is not in the output. The user must act or accept
	// the difference.
	Untranslated Level = "untranslated"
	// Note: translated, but not one to one; the reason says how.
	Note Level = "note"
)

// Source names one input object.
type Source struct {
	// Document is the 1-based position in the stream, with the item for
	// a List ("3.items[2]").
	Document   string `json:"document"`
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Namespace  string `json:"namespace,omitempty"`
	Name       string `json:"name"`
}

func (s Source) String() string {
	name := s.Name
	if s.Namespace != "" {
		name = s.Namespace + "/" + name
	}
	return fmt.Sprintf("%s %s (document %s, %s)", s.Kind, name, s.Document, s.APIVersion)
}

// Issue is one field of a source object that did not carry over as is.
type Issue struct {
	Level Level `json:"level"`
	// Field is the path in the source object ("spec.vrf"); empty for
	// the object as a whole.
	Field  string `json:"field,omitempty"`
	Reason string `json:"reason"`
}

// Entry is the report for one source object.
type Entry struct {
	Source Source `json:"source"`
	// Outputs names what was written for it ("IPAddressPool/prod",
	// "Secret zerohop-system/tor-bgp-password"); empty when nothing was.
	Outputs []string `json:"outputs"`
	Issues  []Issue  `json:"issues"`
}

func (e *Entry) untranslated(field, format string, args ...any) {
	e.Issues = append(e.Issues, Issue{Level: Untranslated, Field: field, Reason: fmt.Sprintf(format, args...)})
}

func (e *Entry) note(field, format string, args ...any) {
	e.Issues = append(e.Issues, Issue{Level: Note, Field: field, Reason: fmt.Sprintf(format, args...)})
}

// Report is the whole import's account, one entry per input object in
// input order.
type Report struct {
	Objects int `json:"objectsRead"`
	Written int `json:"objectsWritten"`
	// PoolOrder is the order in which zerohop's controller tries the
	// written auto-assign pools for a Service they all admit: pools with
	// a serviceAllocation first, then by priority, then by name.
	PoolOrder []string `json:"poolOrder"`
	Entries   []Entry  `json:"entries"`
}

// Count returns the number of issues of a level.
func (r *Report) Count(l Level) int {
	n := 0
	for _, e := range r.Entries {
		for _, i := range e.Issues {
			if i.Level == l {
				n++
			}
		}
	}
	return n
}

// WriteText prints the report for a person: a summary line, then every
// object with an issue and its issues.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "zerohop import metallb: %d objects read, %d zerohop objects written, %d fields untranslated, %d notes\n",
		r.Objects, r.Written, r.Count(Untranslated), r.Count(Note))
	if len(r.PoolOrder) > 0 {
		fmt.Fprintf(&b, "automatic allocation tries the pools in this order (those with a serviceAllocation first, as in MetalLB; then by priority, then by name): %s\n",
			strings.Join(r.PoolOrder, ", "))
	}
	for _, e := range r.Entries {
		if len(e.Issues) == 0 {
			continue
		}
		out := "nothing written"
		if len(e.Outputs) > 0 {
			out = strings.Join(e.Outputs, ", ")
		}
		fmt.Fprintf(&b, "\n%s -> %s\n", e.Source, out)
		for _, i := range e.Issues {
			field := i.Field
			if field == "" {
				field = "(object)"
			}
			fmt.Fprintf(&b, "  %-12s %s: %s\n", i.Level, field, i.Reason)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON prints the report for scripts.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
