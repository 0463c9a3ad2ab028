package tslog

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"testing/slogtest"
)

// TestSlogtest runs the standard library's conformance tests, reading our lines back into maps.
func TestSlogtest(t *testing.T) {
	var buf bytes.Buffer
	newHandler := func(*testing.T) slog.Handler {
		buf.Reset()
		return NewHandler(&buf, Options{Level: LevelDebug, Time: true, PID: 1})
	}
	result := func(t *testing.T) map[string]any {
		line := strings.TrimSuffix(buf.String(), "\n")
		m := map[string]any{}
		first := strings.Fields(line)
		if len(first) >= 2 && first[0] != "" && first[0][0] >= '0' && first[0][0] <= '9' {
			m[slog.TimeKey] = first[0]
			line = strings.TrimPrefix(line, first[0]+" ")
		}
		level, rest, _ := strings.Cut(line, " torsocks[1]: ")
		m[slog.LevelKey] = level
		words := strings.Fields(rest)
		if len(words) > 0 {
			m[slog.MessageKey] = words[0]
		}
		for _, w := range words[1:] {
			k, v, ok := strings.Cut(w, "=")
			if !ok {
				continue
			}
			keys := strings.Split(k, ".")
			cur := m
			for _, g := range keys[:len(keys)-1] {
				sub, ok := cur[g].(map[string]any)
				if !ok {
					sub = map[string]any{}
					cur[g] = sub
				}
				cur = sub
			}
			cur[keys[len(keys)-1]] = v
		}
		return m
	}
	slogtest.Run(t, newHandler, result)
}
