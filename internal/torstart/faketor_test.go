package torstart

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
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
	go func() {
		for {
			c, err := lc.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				authed := false
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					cmd := strings.TrimSpace(line)
					switch {
					case strings.HasPrefix(cmd, "PROTOCOLINFO"):
						fmt.Fprint(c, "250-PROTOCOLINFO 1\r\n250-AUTH METHODS=COOKIE\r\n250 OK\r\n")
					case cmd == "AUTHENTICATE "+hex.EncodeToString(cookie):
						authed = true
						fmt.Fprint(c, "250 OK\r\n")
					case !authed:
						fmt.Fprint(c, "515 Authentication failed\r\n")
						return
					case cmd == "GETINFO status/bootstrap-phase":
						pct := int(time.Since(began) / (3 * time.Millisecond))
						if pct > 100 {
							pct = 100
						}
						if mode == "stuck" {
							pct = 50
						}
						fmt.Fprintf(c, "250-status/bootstrap-phase=NOTICE BOOTSTRAP PROGRESS=%d TAG=t%d SUMMARY=\"Step %d\"\r\n250 OK\r\n", pct, pct/10, pct/10)
					case cmd == "GETCONF SocksPort":
						fmt.Fprintf(c, "250 SocksPort=unix:%s ExtendedErrors\r\n", socks)
					case cmd == "SIGNAL HALT" || cmd == "SIGNAL SHUTDOWN":
						fmt.Fprint(c, "250 OK\r\n")
						close(halt)
						return
					default:
						fmt.Fprint(c, "510 Unrecognized command\r\n")
					}
				}
			}()
		}
	}()
	<-halt
	os.Remove(socks)
	os.Remove(ctrl)
	os.Exit(0)
}
