package testnet

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// controlConn is an authenticated connection to a tor ControlPort.
type controlConn struct {
	c net.Conn
	r *bufio.Reader
}

// controlReply is one reply (or asynchronous event) of the control protocol.
type controlReply struct {
	Code  int
	Lines []string // text after the status code; a data block follows its line after "\n"
}

func (r controlReply) String() string {
	return fmt.Sprintf("%d %s", r.Code, strings.Join(r.Lines, "\n"))
}

func dialControl(ctx context.Context, addr, cookieFile string) (*controlConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("testnet: control port: %w", err)
	}
	cc := &controlConn{c: c, r: bufio.NewReader(c)}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	cookie, err := os.ReadFile(cookieFile)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("testnet: control cookie: %w", err)
	}
	if _, err := cc.do("AUTHENTICATE " + hex.EncodeToString(cookie)); err != nil {
		c.Close()
		return nil, err
	}
	return cc, nil
}

func (cc *controlConn) Close() error { return cc.c.Close() }

func (cc *controlConn) send(cmd string) error {
	if strings.ContainsAny(cmd, "\r\n") {
		return fmt.Errorf("testnet: control command %q has a line break", cmd)
	}
	if _, err := cc.c.Write([]byte(cmd + "\r\n")); err != nil {
		return fmt.Errorf("testnet: control port: %w", err)
	}
	return nil
}

// read reads one complete reply or event.
func (cc *controlConn) read() (controlReply, error) {
	var r controlReply
	for {
		line, err := cc.readLine()
		if err != nil {
			return r, err
		}
		if len(line) < 4 {
			return r, fmt.Errorf("testnet: control port: malformed line %q", line)
		}
		code, err := strconv.Atoi(line[:3])
		if err != nil {
			return r, fmt.Errorf("testnet: control port: malformed line %q", line)
		}
		r.Code = code
		text := line[4:]
		switch line[3] {
		case ' ':
			r.Lines = append(r.Lines, text)
			return r, nil
		case '-':
			r.Lines = append(r.Lines, text)
		case '+':
			var data []string
			for {
				dl, err := cc.readLine()
				if err != nil {
					return r, err
				}
				if dl == "." {
					break
				}
				data = append(data, strings.TrimPrefix(dl, "."))
			}
			r.Lines = append(r.Lines, text+"\n"+strings.Join(data, "\n"))
		default:
			return r, fmt.Errorf("testnet: control port: malformed line %q", line)
		}
	}
}

func (cc *controlConn) readLine() (string, error) {
	line, err := cc.r.ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("testnet: control port: %w", err)
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// do sends cmd and returns its reply, skipping asynchronous events; a
// non-2xx reply is an error.
func (cc *controlConn) do(cmd string) (controlReply, error) {
	if err := cc.send(cmd); err != nil {
		return controlReply{}, err
	}
	for {
		r, err := cc.read()
		if err != nil {
			return r, err
		}
		if r.Code == 650 {
			continue
		}
		if r.Code/100 != 2 {
			verb, _, _ := strings.Cut(cmd, " ")
			return r, fmt.Errorf("testnet: control %s: %s", verb, r)
		}
		return r, nil
	}
}

// Control runs one command on the client's ControlPort (authenticated with
// the cookie) and returns the reply's lines without their status codes; a
// data block follows its "key=" line. A reply other than 2xx is an error.
func (n *Network) Control(cmd string) (string, error) {
	r, err := n.control(cmd)
	if err != nil {
		return "", err
	}
	return strings.Join(r.Lines, "\n"), nil
}

func (n *Network) control(cmd string) (controlReply, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cc, err := dialControl(ctx, n.ControlAddr.String(), n.CookieFile)
	if err != nil {
		return controlReply{}, err
	}
	defer cc.Close()
	return cc.do(cmd)
}

// GetInfo returns the value of one GETINFO key of the client.
func (n *Network) GetInfo(key string) (string, error) {
	r, err := n.control("GETINFO " + key)
	if err != nil {
		return "", err
	}
	return getInfoValue(r, key)
}

func getInfoValue(r controlReply, key string) (string, error) {
	// Either "key=value" (one line) or "key=\n<data>" (data block).
	for _, l := range r.Lines {
		if v, ok := strings.CutPrefix(l, key+"="); ok {
			return strings.TrimPrefix(v, "\n"), nil
		}
	}
	return "", fmt.Errorf("testnet: GETINFO %s: no value in %v", key, r)
}

// Hop is one relay of a circuit's path.
type Hop struct {
	Fingerprint string // 40 hex digits, without "$"
	Nickname    string
}

// Circuit is one line of GETINFO circuit-status.
type Circuit struct {
	ID            string
	Status        string // LAUNCHED, BUILT, GUARD_WAIT, EXTENDED, FAILED, CLOSED
	Path          []Hop
	BuildFlags    []string
	Purpose       string
	HSState       string
	RendQuery     string
	SOCKSUsername string // isolation credentials of the streams it carries
	SOCKSPassword string
	Fields        map[string]string // every KEY=VALUE field, unquoted
}

// Stream is one line of GETINFO stream-status.
type Stream struct {
	ID        string
	Status    string // NEW, SENTCONNECT, SUCCEEDED, ...
	CircuitID string // "0" while unattached
	Target    string // host:port
}

// Circuits returns the client's circuits.
func (n *Network) Circuits() ([]Circuit, error) {
	v, err := n.GetInfo("circuit-status")
	if err != nil {
		return nil, err
	}
	return parseCircuits(v)
}

// Streams returns the client's streams.
func (n *Network) Streams() ([]Stream, error) {
	v, err := n.GetInfo("stream-status")
	if err != nil {
		return nil, err
	}
	return parseStreams(v)
}

func parseCircuits(s string) ([]Circuit, error) {
	var cs []Circuit
	for _, line := range strings.Split(s, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		toks, err := splitControlFields(line)
		if err != nil {
			return nil, err
		}
		if len(toks) < 2 {
			return nil, fmt.Errorf("testnet: circuit-status line %q", line)
		}
		c := Circuit{ID: toks[0], Status: toks[1], Fields: map[string]string{}}
		rest := toks[2:]
		if len(rest) > 0 && !strings.Contains(rest[0], "=") {
			for _, h := range strings.Split(rest[0], ",") {
				fp, nick, _ := strings.Cut(strings.TrimPrefix(h, "$"), "~")
				c.Path = append(c.Path, Hop{Fingerprint: fp, Nickname: nick})
			}
			rest = rest[1:]
		}
		for _, kv := range rest {
			k, v, _ := strings.Cut(kv, "=")
			v = unquoteControl(v)
			c.Fields[k] = v
			switch k {
			case "BUILD_FLAGS":
				c.BuildFlags = strings.Split(v, ",")
			case "PURPOSE":
				c.Purpose = v
			case "HS_STATE":
				c.HSState = v
			case "REND_QUERY":
				c.RendQuery = v
			case "SOCKS_USERNAME":
				c.SOCKSUsername = v
			case "SOCKS_PASSWORD":
				c.SOCKSPassword = v
			}
		}
		cs = append(cs, c)
	}
	return cs, nil
}

func parseStreams(s string) ([]Stream, error) {
	var ss []Stream
	for _, line := range strings.Split(s, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 {
			return nil, fmt.Errorf("testnet: stream-status line %q", line)
		}
		ss = append(ss, Stream{ID: f[0], Status: f[1], CircuitID: f[2], Target: f[3]})
	}
	return ss, nil
}

// splitControlFields splits a control-protocol line at spaces outside
// double quotes.
func splitControlFields(line string) ([]string, error) {
	var (
		toks []string
		cur  strings.Builder
		inQ  bool
	)
	for i := 0; i < len(line); i++ {
		ch := line[i]
		switch {
		case inQ && ch == '\\' && i+1 < len(line):
			cur.WriteByte(ch)
			i++
			cur.WriteByte(line[i])
		case ch == '"':
			inQ = !inQ
			cur.WriteByte(ch)
		case ch == ' ' && !inQ:
			if cur.Len() > 0 {
				toks = append(toks, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteByte(ch)
		}
	}
	if inQ {
		return nil, fmt.Errorf("testnet: unterminated quote in %q", line)
	}
	if cur.Len() > 0 {
		toks = append(toks, cur.String())
	}
	return toks, nil
}

// unquoteControl removes the quotes and C escapes of a QuotedString; other
// values are returned as they are.
func unquoteControl(v string) string {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return v
	}
	if u, err := strconv.Unquote(v); err == nil {
		return u
	}
	return v[1 : len(v)-1]
}
