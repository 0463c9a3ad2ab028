package registry

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestDocMatchesCode checks docs/registry.md against the code: every seed
// step in its table points at the line of registry.go that carries that
// step's comment, and every other file:line reference exists.
func TestDocMatchesCode(t *testing.T) {
	doc, err := os.ReadFile("../../docs/registry.md")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]string{}
	for _, f := range []string{"registry.go", "sweeper.go"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		files[f] = strings.Split(string(b), "\n")
	}
	line := func(f string, n int) string {
		if n < 1 || n > len(files[f]) {
			t.Errorf("docs/registry.md: %s:%d does not exist", f, n)
			return ""
		}
		return files[f][n-1]
	}
	step := regexp.MustCompile(`^\|\s*(?:\*\*)?(add|lookup|destroy)(?:\*\*)? (\d\))`)
	ref := regexp.MustCompile(`(registry|sweeper)\.go:(\d+)`)
	rows := 0
	for _, l := range strings.Split(string(doc), "\n") {
		for _, m := range ref.FindAllStringSubmatch(l, -1) {
			n, _ := strconv.Atoi(m[2])
			line(m[1]+".go", n)
		}
		s := step.FindStringSubmatch(l)
		if s == nil {
			continue
		}
		cells := strings.Split(strings.Trim(l, "| "), "|")
		r := ref.FindStringSubmatch(cells[len(cells)-1])
		if r == nil {
			continue // the caller's step
		}
		rows++
		n, _ := strconv.Atoi(r[2])
		if want := s[1] + " " + s[2]; !strings.Contains(line(r[1]+".go", n), want) {
			t.Errorf("docs/registry.md: %q is at %s:%d, which reads %q", want, r[1]+".go", n, line(r[1]+".go", n))
		}
	}
	if rows != 18 {
		t.Errorf("found %d seed steps mapped to lines in docs/registry.md, want 18", rows)
	}
}
