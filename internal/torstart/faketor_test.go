package torstart

import (
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gotorsocks/torsocks/internal/torcontrol/torcontroltest"
)

// fakeTor is what the test binary does when run as "tor" (TORSTART_FAKE_TOR set): it reads the
// torrc given with -f, writes the cookie and the pid file, listens on the unix SocksPort and
// ControlPort, and answers PROTOCOLINFO, AUTHENTICATE, GETINFO status/bootstrap-phase (0 to
// 100% over 300 ms, or stuck at 50% with TORSTART_FAKE_TOR=stuck) and SIGNAL HALT or SHUTDOWN. Each start
// appends "start PID" to $TORSTART_FAKE_LOG.
func fakeTor(mode string) {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "fake tor:", err)
		os.Exit(1)
	}
	var torrc string
	for i, a := range os.Args {
		if a == "-f" && i+1 < len(os.Args) {
			torrc = os.Args[i+1]
		}
	}
	data, err := os.ReadFile(torrc)
	if err != nil {
		fail(err)
	}
	conf := map[string]string{}
	for _, l := range strings.Split(string(data), "\n") {
		k, v, _ := strings.Cut(l, " ")
		if _, ok := conf[k]; !ok {
			conf[k] = v
		}
	}
	unq := func(v string) string {
		if u, err := strconv.Unquote(v); err == nil {
			return u
		}
		return v
	}
	socks := unq(strings.TrimPrefix(strings.Fields(conf["SocksPort"])[0], "unix:"))
	ctrl := unq(strings.TrimPrefix(conf["ControlPort"], "unix:"))
	logFile := unq(strings.TrimPrefix(conf["Log"], "notice file "))
	if f, err := os.OpenFile(os.Getenv("TORSTART_FAKE_LOG"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); err == nil {
		fmt.Fprintf(f, "start %d\n", os.Getpid())
		f.Close()
	}
	cookie := make([]byte, 32)
	rand.Read(cookie)
	if err := os.WriteFile(unq(conf["CookieAuthFile"]), cookie, 0o600); err != nil {
		fail(err)
	}
	time.Sleep(50 * time.Millisecond) // as a real tor, the control port is not there at once
	ls, err := net.Listen("unix", socks)
	if err != nil {
		fail(err)
	}
	defer ls.Close()
	lc, err := net.Listen("unix", ctrl)
	if err != nil {
		fail(err)
	}
	defer lc.Close()
	if err := os.WriteFile(unq(conf["PidFile"]), []byte(fmt.Sprintln(os.Getpid())), 0o600); err != nil {
		fail(err)
	}
	if mode == "stuck" {
		os.WriteFile(logFile, []byte("Jan 01 00:00:00.000 [warn] fake: no authority reachable\n"), 0o600)
	}
	began := time.Now()
	halt := make(chan struct{})
	var haltOnce sync.Once
	srv := &torcontroltest.Server{Cookie: cookie, Handle: func(cmd string) (string, bool) {
		switch cmd {
		case "GETINFO status/bootstrap-phase":
			pct := min(int(time.Since(began)/(3*time.Millisecond)), 100)
			if mode == "stuck" {
				pct = 50
			}
			return fmt.Sprintf("250-status/bootstrap-phase=NOTICE BOOTSTRAP PROGRESS=%d TAG=t%d SUMMARY=\"Step %d\"\r\n250 OK\r\n", pct, pct/10, pct/10), false
		case "GETCONF SocksPort":
			return fmt.Sprintf("250 SocksPort=unix:%s ExtendedErrors\r\n", socks), false
		case "SIGNAL HALT", "SIGNAL SHUTDOWN":
			haltOnce.Do(func() { close(halt) })
			return "250 OK\r\n", true
		}
		return "510 Unrecognized command\r\n", false
	}}
	go srv.Serve(lc)
	<-halt
	os.Remove(socks)
	os.Remove(ctrl)
	os.Exit(0)
}
