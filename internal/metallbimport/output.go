package metallbimport

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"sigs.k8s.io/yaml"
)

// WriteYAML writes the objects as one multi-document YAML stream, in input
// order. Status and the empty creationTimestamp that Go's types carry are
// left out: they are not the user's to apply.
func (r *Result) WriteYAML(w io.Writer) error {
	var b strings.Builder
	for i, o := range r.Objects {
		m, err := toMap(o)
		if err != nil {
			return fmt.Errorf("%s: %w", outputName(o), err)
		}
		delete(m, "status")
		if md, ok := m["metadata"].(map[string]any); ok {
			delete(md, "creationTimestamp")
		}
		y, err := yaml.Marshal(m)
		if err != nil {
			return fmt.Errorf("%s: %w", outputName(o), err)
		}
		if i > 0 {
			b.WriteString("---\n")
		}
		b.Write(y)
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func toMap(o any) (map[string]any, error) {
	j, err := json.Marshal(o)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	err = json.Unmarshal(j, &m)
	return m, err
}
