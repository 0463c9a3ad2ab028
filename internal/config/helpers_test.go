package config

import (
	"io/fs"
	"strings"
	"testing"
)

// envOf makes a getenv from "NAME=value" strings.
func envOf(kv ...string) func(string) (string, bool) {
	m := map[string]string{}
	for _, s := range kv {
		k, v, _ := strings.Cut(s, "=")
		m[k] = v
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

// filesOf makes a readFile from name, content pairs; other names do not exist.
func filesOf(nameContent ...string) func(string) ([]byte, error) {
	m := map[string]string{}
	for i := 0; i+1 < len(nameContent); i += 2 {
		m[nameContent[i]] = nameContent[i+1]
	}
	return func(name string) ([]byte, error) {
		if v, ok := m[name]; ok {
			return []byte(v), nil
		}
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
}

// conf is a readFile serving one default config file.
func conf(text string) func(string) ([]byte, error) { return filesOf(DefaultConfigFile, text) }

func mustParse(t *testing.T, args []string, getenv func(string) (string, bool), readFile func(string) ([]byte, error)) *Invocation {
	t.Helper()
	inv, err := Parse(args, getenv, readFile)
	if err != nil {
		t.Fatalf("Parse(%q): %v", args, err)
	}
	return inv
}

func parseErr(t *testing.T, args []string, getenv func(string) (string, bool), readFile func(string) ([]byte, error)) error {
	t.Helper()
	inv, err := Parse(args, getenv, readFile)
	if err == nil {
		t.Fatalf("Parse(%q) = %+v, want an error", args, inv)
	}
	if strings.Contains(err.Error(), "\n") {
		t.Errorf("error is not one line: %q", err)
	}
	return err
}
