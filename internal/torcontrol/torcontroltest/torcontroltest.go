// Package torcontroltest is a fake Tor ControlPort for tests: it answers PROTOCOLINFO and
// AUTHENTICATE with the cookie as tor does, and hands the other commands of an authenticated
// connection to a handler.
package torcontroltest

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"net"
	"strings"
)

// Server answers the control connections of a listener.
type Server struct {
	Cookie []byte // AUTHENTICATE must give it in hex
	// Handle answers a command (without its "\r\n") of an authenticated connection: the reply,
	// written as it is (lines ending in "\r\n"), and whether to close the connection after it.
	// Without Handle every such command is unrecognized (510).
	Handle func(cmd string) (reply string, hangUp bool)
}

// Serve answers the connections of l, each in its own goroutine, until l is closed.
func (s *Server) Serve(l net.Listener) error {
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go s.serve(c)
	}
}

func (s *Server) serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	authed := false
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.TrimRight(line, "\r\n")
		reply, hangUp := "", false
		switch {
		case !authed && strings.HasPrefix(cmd, "PROTOCOLINFO"):
			reply = "250-PROTOCOLINFO 1\r\n250-AUTH METHODS=COOKIE\r\n250 OK\r\n"
		case !authed && cmd == "AUTHENTICATE "+hex.EncodeToString(s.Cookie):
			authed, reply = true, "250 OK\r\n"
		case !authed && strings.HasPrefix(cmd, "AUTHENTICATE"):
			reply, hangUp = "515 Authentication failed: Authentication cookie did not match expected value.\r\n", true
		case !authed:
			reply, hangUp = "514 Authentication required.\r\n", true
		case s.Handle != nil:
			reply, hangUp = s.Handle(cmd)
		default:
			reply = fmt.Sprintf("510 Unrecognized command %q\r\n", cmd)
		}
		if _, err := c.Write([]byte(reply)); err != nil || hangUp {
			return
		}
	}
}
