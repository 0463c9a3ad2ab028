// Package torcontrol is the Tor control protocol client torsocks and its tests use: it dials a
// TCP or unix ControlPort, authenticates with the cookie (PROTOCOLINFO, then AUTHENTICATE with
// the cookie in hex), sends commands and reads their replies, multi-line and with data blocks,
// as control-spec.txt describes them, and splits a reply's text into its space-separated
// fields (QuotedStrings whole) and KEY=VALUE pairs.
package torcontrol

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// Reply is one reply, or one asynchronous event (code 650), of the control protocol.
type Reply struct {
	Code int
	// Lines holds the text after each line's status code; a data block follows the text of
	// its line after "\n", without its final "." and with its leading dots unstuffed.
	Lines []string
}

func (r Reply) String() string {
	return fmt.Sprintf("%d %s", r.Code, strings.Join(r.Lines, "\n"))
}

// Value returns the value of key in a reply of "key=value" lines (GETINFO, GETCONF): the
// text after "key=", or a data block's content.
func (r Reply) Value(key string) (string, bool) {
	for _, l := range r.Lines {
		if v, ok := strings.CutPrefix(l, key+"="); ok {
			return strings.TrimPrefix(v, "\n"), true
		}
	}
	return "", false
}

// Conn is an authenticated connection to a ControlPort. Its methods are not safe for
// concurrent use, except that one goroutine may Read while another Sends.
type Conn struct {
	c net.Conn
	r *bufio.Reader
}

// Dial connects to the ControlPort at addr ("tcp" or "unix" network), checks that it speaks
// the control protocol (PROTOCOLINFO) and authenticates with the cookie in cookieFile. The
// context bounds the dial and the authentication; the connection it returns has no deadline.
func Dial(ctx context.Context, network, addr, cookieFile string) (*Conn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("tor control port: %w", err)
	}
	cc := &Conn{c: c, r: bufio.NewReader(c)}
	// The context's end (its deadline too) cuts the authentication short.
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	err = cc.authenticate(cookieFile)
	if !stop() {
		err = fmt.Errorf("tor control port %s: %w", addr, context.Cause(ctx))
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	return cc, nil
}

func (cc *Conn) authenticate(cookieFile string) error {
	if _, err := cc.Do("PROTOCOLINFO 1"); err != nil {
		return err
	}
	cookie, err := os.ReadFile(cookieFile)
	if err != nil {
		return fmt.Errorf("tor control cookie: %w", err)
	}
	_, err = cc.Do("AUTHENTICATE " + hex.EncodeToString(cookie))
	return err
}

// Close closes the connection; a Read blocked on it returns.
func (cc *Conn) Close() error { return cc.c.Close() }

// SetDeadline sets the deadline of the reads and writes on the connection (net.Conn's).
func (cc *Conn) SetDeadline(t time.Time) error { return cc.c.SetDeadline(t) }

// Do sends cmd and returns its reply, skipping asynchronous events. A reply other than 2xx is
// returned with an error.
func (cc *Conn) Do(cmd string) (Reply, error) {
	if err := cc.Send(cmd); err != nil {
		return Reply{}, err
	}
	for {
		r, err := readReply(cc.r)
		if err != nil {
			return r, fmt.Errorf("tor control %s: %w", verb(cmd), err)
		}
		if r.Code == 650 {
			continue
		}
		if r.Code/100 != 2 {
			return r, fmt.Errorf("tor control %s: %s", verb(cmd), r)
		}
		return r, nil
	}
}

// GetInfo returns the value of one GETINFO key.
func (cc *Conn) GetInfo(key string) (string, error) {
	r, err := cc.Do("GETINFO " + key)
	if err != nil {
		return "", err
	}
	v, ok := r.Value(key)
	if !ok {
		return "", fmt.Errorf("tor control GETINFO %s: no value in %q", key, r.Lines)
	}
	return v, nil
}

// Send sends one command without reading its reply (see Read).
func (cc *Conn) Send(cmd string) error {
	if strings.ContainsAny(cmd, "\r\n") {
		return fmt.Errorf("tor control %s: the command has a line break", verb(cmd))
	}
	if _, err := cc.c.Write([]byte(cmd + "\r\n")); err != nil {
		return fmt.Errorf("tor control %s: %w", verb(cmd), err)
	}
	return nil
}

// Read reads the next reply or asynchronous event.
func (cc *Conn) Read() (Reply, error) {
	r, err := readReply(cc.r)
	if err != nil {
		return r, fmt.Errorf("tor control: %w", err)
	}
	return r, nil
}

func verb(cmd string) string {
	v, _, _ := strings.Cut(cmd, " ")
	return v
}

// readReply reads one reply: "XYZ-text" and "XYZ+text" lines (the latter followed by a data
// block ending in a "." line) up to the "XYZ text" line that ends it.
func readReply(br *bufio.Reader) (Reply, error) {
	var r Reply
	for {
		line, err := readLine(br)
		if err != nil {
			return Reply{}, err
		}
		if len(line) < 4 || !isDigit(line[0]) || !isDigit(line[1]) || !isDigit(line[2]) || !strings.ContainsRune(" -+", rune(line[3])) {
			return Reply{}, fmt.Errorf("malformed reply line %q", line)
		}
		r.Code = int(line[0]-'0')*100 + int(line[1]-'0')*10 + int(line[2]-'0')
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
				dl, err := readLine(br)
				if err != nil {
					return Reply{}, err
				}
				if dl == "." {
					break
				}
				data = append(data, strings.TrimPrefix(dl, "."))
			}
			r.Lines = append(r.Lines, text+"\n"+strings.Join(data, "\n"))
		}
	}
}

func isDigit(b byte) bool { return '0' <= b && b <= '9' }

func readLine(br *bufio.Reader) (string, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}

// Fields splits a line of a reply at the spaces outside double quotes; a quoted string (with
// its backslash escapes) stays within its field, quotes and all (see Unquote).
func Fields(line string) ([]string, error) {
	var (
		fields []string
		cur    strings.Builder
		inQ    bool
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
				fields = append(fields, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteByte(ch)
		}
	}
	if inQ {
		return nil, fmt.Errorf("tor control: unterminated quote in %q", line)
	}
	if cur.Len() > 0 {
		fields = append(fields, cur.String())
	}
	return fields, nil
}

// KeyValues returns the values of the KEY=VALUE fields among fields (see Fields), unquoted, by
// key; the last of a key's fields gives its value. Fields without "=" are left out.
func KeyValues(fields []string) map[string]string {
	kv := make(map[string]string, len(fields))
	for _, f := range fields {
		if k, v, ok := strings.Cut(f, "="); ok {
			kv[k] = Unquote(v)
		}
	}
	return kv
}

// Unquote returns the content of a QuotedString, a value between double quotes with the
// escapes tor writes (\" \\ \n \r \t and octal \ooo; a backslash before another character
// stands for that character). A value not between quotes is returned as it is.
func Unquote(v string) string {
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
		return v
	}
	v = v[1 : len(v)-1]
	if !strings.Contains(v, `\`) {
		return v
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] != '\\' || i+1 == len(v) {
			b.WriteByte(v[i])
			continue
		}
		i++
		switch c := v[i]; c {
		case 'n':
			b.WriteByte('\n')
		case 'r':
			b.WriteByte('\r')
		case 't':
			b.WriteByte('\t')
		case '0', '1', '2', '3', '4', '5', '6', '7':
			n := 0
			for j := 0; j < 3 && i < len(v) && '0' <= v[i] && v[i] <= '7'; j++ {
				n = n*8 + int(v[i]-'0')
				i++
			}
			i--
			b.WriteByte(byte(n))
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
