package config

import (
	"fmt"
	"strconv"
	"strings"
)

// ParseConfigFile parses the text of a torsocks.conf. name is used in messages only.
//
// The syntax is torsocks': one "Key Value" per line, separated by spaces or tabs, keys
// case-sensitive. Unlike torsocks' parser: the last line needs no newline, an empty file is valid
// (all defaults), CRLF line ends and a UTF-8 byte-order mark are accepted, and '#' starts a comment
// at the start of a line or after a space or tab (so "TorPort 9050 # Tor's default" works while a
// password "pa#ss" stays whole, as it does in torsocks). Booleans accept 0/1, no/yes, false/true,
// off/on.
//
// A bad line of a known key is an error "name:line: Key: what is wrong": a key without value, more
// than one value, a value out of range. Unknown keys are warnings (as in torsocks), with a "did you
// mean" when only the letter case differs; such a line is ignored. A key given twice: the last value
// wins, as in torsocks, with a warning. Both warnings are "name:line: ..." too.
func ParseConfigFile(name string, data []byte) (FileSettings, []string, error) {
	var (
		s     FileSettings
		warns []string
		seen  = map[string]int{}
	)
	text := strings.TrimPrefix(string(data), "\ufeff")
	for i, line := range strings.Split(text, "\n") {
		lineNo := i + 1
		where := name + ":" + strconv.Itoa(lineNo)
		words := strings.FieldsFunc(stripComment(line), isConfSpace)
		if len(words) == 0 {
			continue
		}
		key := words[0]
		set, canonical := lookupKey(key)
		if set == nil {
			if canonical != "" {
				warns = append(warns, fmt.Sprintf("%s: unknown key %s ignored: keys are case-sensitive, did you mean %s?",
					where, show(key), canonical))
			} else {
				warns = append(warns, fmt.Sprintf("%s: unknown key %s ignored", where, show(key)))
			}
			continue
		}
		switch len(words) {
		case 1:
			return FileSettings{}, warns, fmt.Errorf("%s: %s has no value", where, key)
		case 2:
		default:
			return FileSettings{}, warns, fmt.Errorf("%s: %s: expected one value, found %d: %s",
				where, key, len(words)-1, show(strings.Join(words[1:], " ")))
		}
		if err := set(&s, words[1], where); err != nil {
			return FileSettings{}, warns, fmt.Errorf("%s: %s: %w", where, key, err)
		}
		if first, dup := seen[key]; dup {
			warns = append(warns, fmt.Sprintf("%s: %s given again (first on line %d): the last value wins", where, key, first))
		} else {
			seen[key] = lineNo
		}
	}
	return s, warns, nil
}

// stripComment cuts a line at the first '#' that starts it or follows a space or tab.
func stripComment(line string) string {
	for i := 0; i < len(line); i++ {
		if line[i] == '#' && (i == 0 || isConfSpace(rune(line[i-1]))) {
			return line[:i]
		}
	}
	return line
}

// isConfSpace separates words: space and tab as in torsocks, and the other ASCII white space, so
// that a CR of a CRLF line end or a stray form feed does not become part of a value.
func isConfSpace(r rune) bool {
	switch r {
	case ' ', '\t', '\r', '\v', '\f':
		return true
	}
	return false
}

// lookupKey returns the setter of a file key, or, for a key that differs from a known one only by
// letter case, that key's spelling.
func lookupKey(key string) (setter, string) {
	for _, k := range fileKeys {
		if k.key == key {
			return k.set, k.key
		}
	}
	for _, k := range fileKeys {
		if strings.EqualFold(k.key, key) {
			return nil, k.key
		}
	}
	return nil, ""
}
