package torstart

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// reserved are the torrc keys torsocks sets itself; TorConfig may not set them (a second
// DataDirectory or "SocksPort 0" would break what torsocks relies on). Tor's keys are
// case-insensitive.
var reserved = []string{
	"SocksPort", "ControlPort", "ControlSocket", "CookieAuthentication", "CookieAuthFile",
	"DataDirectory", "PidFile", "RunAsDaemon", "__OwningControllerProcess", "HashedControlPassword",
}

// Torrc returns the torrc of the user's tor: its own sockets, data directory, pid file and log,
// then the lines of extra (the TorConfig file, named name in errors). An extra line setting a key
// of ours is an error "NAME:LINE: KEY is set by torsocks".
func Torrc(p Paths, extra []byte, name string) (string, error) {
	var b strings.Builder
	set := func(key string, vals ...string) {
		b.WriteString(key)
		for _, v := range vals {
			b.WriteByte(' ')
			b.WriteString(v)
		}
		b.WriteByte('\n')
	}
	b.WriteString("# The tor torsocks started for this user (internal/torstart). Rewritten at each start.\n")
	// Unix sockets are created 0600 (no GroupWritable, no WorldWritable) in a 0700 directory.
	set("SocksPort", "unix:"+quote(p.Socks()), "ExtendedErrors")
	set("ControlPort", "unix:"+quote(p.Control()))
	set("CookieAuthentication", "1")
	set("CookieAuthFile", quote(p.Cookie()))
	set("DataDirectory", quote(p.DataDir))
	set("PidFile", quote(p.PidFile()))
	set("Log", "notice", "file", quote(p.Log()))
	set("RunAsDaemon", "0")
	if len(extra) > 0 {
		fmt.Fprintf(&b, "# From TorConfig %s:\n", name)
		sc := bufio.NewScanner(bytes.NewReader(extra))
		sc.Buffer(nil, 1<<20)
		for n := 1; sc.Scan(); n++ {
			line := sc.Text()
			key, _, _ := strings.Cut(strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "+")), " ")
			key, _, _ = strings.Cut(key, "\t")
			for _, r := range reserved {
				if strings.EqualFold(key, r) {
					return "", fmt.Errorf("%s:%d: %s is set by torsocks for the tor it starts; remove the line", name, n, key)
				}
			}
			b.WriteString(line)
			b.WriteByte('\n')
		}
		if err := sc.Err(); err != nil {
			return "", fmt.Errorf("%s: %w", name, err)
		}
	}
	return b.String(), nil
}

// quote writes a torrc value: as is when plain, else as a C string, which tor's config parser
// unescapes.
func quote(v string) string {
	if v != "" && !strings.ContainsAny(v, " \t\"\\#'") && strconv.CanBackquote(v) {
		return v
	}
	return strconv.Quote(v)
}
