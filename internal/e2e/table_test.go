package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The compatibility table: program (or case) × tool, filled by the tests and
// written to docs/compatibility.md with -update.

const (
	secPrograms  = "Programs"
	secErrors    = "Tor's errors"
	secIsolation = "Isolation"
)

var sectionIntro = map[string]string{
	secPrograms: "Each program fetches a page (git: clones a repository; nc: talks to a service that speaks first) " +
		"from the test host by address, by name, and from the onion service by its .onion name. " +
		"**works**: right output, and every connection reached the destination from a Tor exit (or the onion service). " +
		"**LEAKS**: something of the run reached the destination or the system's nameserver without Tor. " +
		"**fails**: neither (the program's last error line is quoted).",
	secErrors: "What the program's `connect` returns (python3, blocking `socket.connect` after `getaddrinfo`) " +
		"and the line torsocks writes on stderr.",
	secIsolation: "Two processes started by one `sh -c`, each holding an HTTP request open while Tor's control port " +
		"is asked which circuit carries each stream (GETINFO stream-status, circuit-status).",
}

type cell struct {
	status string // works, fails, LEAKS, skipped, n/a, or a short statement
	detail string
}

func (c cell) String() string {
	if c.detail == "" {
		return c.status
	}
	return c.status + ": " + c.detail
}

type rowKey struct{ section, name string }

type table struct {
	mu    sync.Mutex
	rows  []rowKey
	cells map[rowKey]map[string]cell
}

func newTable() *table { return &table{cells: map[rowKey]map[string]cell{}} }

// declare adds a row (in display order) unless it exists.
func (tb *table) declare(section, name string) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	k := rowKey{section, name}
	if _, ok := tb.cells[k]; !ok {
		tb.rows = append(tb.rows, k)
		tb.cells[k] = map[string]cell{}
	}
}

func (tb *table) set(section, name, tool string, c cell) {
	tb.declare(section, name)
	tb.mu.Lock()
	defer tb.mu.Unlock()
	tb.cells[rowKey{section, name}][tool] = c
}

func (tb *table) get(section, name, tool string) (cell, bool) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	c, ok := tb.cells[rowKey{section, name}][tool]
	return c, ok
}

// markdown renders the sections in order.
func (tb *table) markdown(cName string) string {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	var b strings.Builder
	for _, sec := range []string{secPrograms, secErrors, secIsolation} {
		fmt.Fprintf(&b, "## %s\n\n%s\n\n", sec, sectionIntro[sec])
		fmt.Fprintf(&b, "| case | %s | this torsocks (seccomp) |\n|---|---|---|\n", cName)
		for _, k := range tb.rows {
			if k.section != sec {
				continue
			}
			cs := tb.cells[k]
			fmt.Fprintf(&b, "| %s | %s | %s |\n", k.name, mdCell(cs[toolC]), mdCell(cs[toolGo]))
		}
		b.WriteString("\n")
	}
	return b.String()
}

func mdCell(c cell) string {
	s := c.status
	if s == "works" || s == "LEAKS" || s == "fails" {
		s = "**" + s + "**"
	}
	if c.status == "" {
		s = "(not run)"
	}
	if c.detail != "" {
		s += ": " + c.detail
	}
	return strings.ReplaceAll(s, "|", `\|`)
}

// finishTable checks the table (this torsocks: everything works, nothing
// leaks; the C torsocks: the static Go client leaks, proving the canaries
// see leaks), logs it, and writes docs/compatibility.md with -update.
func (e *env) finishTable(t *testing.T) {
	var missing []string
	e.table.mu.Lock()
	for _, k := range e.table.rows {
		for _, tool := range []string{toolC, toolGo} {
			c, ok := e.table.cells[k][tool]
			if !ok {
				missing = append(missing, fmt.Sprintf("%s/%s/%s", k.section, k.name, tool))
				continue
			}
			if tool == toolGo && (c.status == "LEAKS" || c.status == "fails") {
				t.Errorf("this torsocks: %s — %s", k.name, c)
			}
		}
	}
	e.table.mu.Unlock()
	if e.cVersion != "" {
		if c, ok := e.table.get(secPrograms, "static Go client (CGO_ENABLED=0) — "+string(byIP), toolC); ok && c.status != "LEAKS" {
			t.Errorf("the static Go client under the C torsocks: %s; it bypasses LD_PRELOAD, so the canary should have seen a leak", c)
		}
	}
	cName := "C torsocks"
	if e.cVersion != "" {
		cName = "C torsocks " + e.cVersion + " (LD_PRELOAD)"
	}
	md := e.table.markdown(cName)
	t.Logf("compatibility table:\n%s", md)
	if !*update {
		return
	}
	if len(missing) > 0 {
		t.Errorf("-update: not writing docs/compatibility.md: cases not run (run the whole TestE2E): %v", missing)
		return
	}
	doc := e.docHeader() + md + docNotes
	path := filepath.Join("..", "..", "docs", "compatibility.md")
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", path)
}

func (e *env) docHeader() string {
	ver := func(args ...string) string {
		out, err := exec.Command(args[0], args[1:]...).Output()
		if err != nil {
			return "?"
		}
		return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
	kernel := ver("uname", "-r")
	build := "this torsocks from commit " + ver("git", "rev-parse", "--short", "HEAD")
	if st := ver("git", "status", "--porcelain", "--untracked-files=no"); st != "" {
		build += " plus uncommitted changes"
	}
	tor := strings.TrimSuffix(ver("tor", "--version"), ".")
	dns := "names resolve under this torsocks"
	if !e.dnsWorks {
		dns = "**names did not resolve yet under this torsocks (DNS, issue 4, not in this build): its name and .onion cases were skipped**"
	}
	return fmt.Sprintf(`# Compatibility: this torsocks and the C torsocks, side by side

Generated by the end-to-end suite, `+"`go test ./internal/e2e -run TestE2E -update`"+`, on %s
(%s; kernel %s, %s, C torsocks %s; %s).
Every program ran against a private Tor network (internal/testnet: 3 authorities, 3 exits, a client, a v3
onion service) inside a private network namespace, once under each torsocks. The exits connect out from
198.51.100.1; the test host 203.0.113.10 (web server, banner service, onion target) and a DNS server on the
system's nameserver address record every connection and query, so anything arriving from elsewhere is a leak.
Tor network up in %v (client bootstrapped %v after launch); whole suite %v.

`, time.Now().UTC().Format("2006-01-02"), build, kernel, tor, e.cVersion, dns,
		e.timings.network.Round(100*time.Millisecond), e.net.Timings.Bootstrap.Round(100*time.Millisecond),
		e.timings.total.Round(time.Second))
}

const docNotes = `## Why they differ

- The C torsocks works by ` + "`LD_PRELOAD`" + `: it wraps libc's ` + "`connect`" + `, ` + "`getaddrinfo`" + `, ` + "`syscall()`" + ` and
  friends. A program that does not go through libc — a static or Go binary (Go calls the kernel itself and
  has its own resolver), a C program issuing the syscall instruction — is not intercepted at all: it
  connects, and resolves names, directly and silently (the LEAKS above). This torsocks stops every
  ` + "`connect`" + `, ` + "`sendto`" + ` and ` + "`sendmsg`" + ` in the kernel (seccomp user notification), whoever makes it.
- Names: the C torsocks resolves with Tor's RESOLVE command and connects to the address it got; this
  torsocks (` + "`--dns map`" + `, the default) answers the program's own DNS query at once with a stand-in address and
  sends the name to Tor in the CONNECT, so the exit resolves it. Either way the name reaches the exits'
  resolver and nothing reaches the system's nameserver. A name that does not exist therefore fails at
  ` + "`getaddrinfo`" + ` under the C torsocks (EAI_FAIL) but at ` + "`connect`" + ` under this one (EHOSTUNREACH).
- Go's resolver refuses .onion names without asking DNS (RFC 7686), so a Go program reaches an onion only
  by speaking SOCKS itself: neither torsocks can help it.
- Tor's onion-service errors (SOCKS replies 0xF0-0xF7) reach the program as ECONNABORTED in both
  (torsocks' mapping); this torsocks names the error in words on stderr. Tor answers both an exit-policy
  rejection and a refused connection with reply 1 (general failure): ECONNREFUSED in both.
- Isolation: the C torsocks' ` + "`-i`" + ` credentials are ` + "`torsocks-PID:UNIXTIME`" + `; this torsocks' are per process and random.
- ` + "`torsocks sh ...`" + ` runs nothing under the C torsocks: its wrapper script takes ` + "`sh`" + ` as ` + "`show`" + ` (print
  LD_PRELOAD). The suite uses ` + "`/bin/sh`" + `.
- Tor has no half-closed streams: a client's ` + "`shutdown(SHUT_WR)`" + ` (` + "`nc -N`" + `) ends the stream both ways under
  either torsocks, and the server's answer is lost; the suite's nc waits for the server to close instead.

Regenerate with ` + "`go test ./internal/e2e -run TestE2E -update`" + ` (root; about 25 s).
`
