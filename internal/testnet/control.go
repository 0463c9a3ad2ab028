package testnet

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/gotorsocks/torsocks/internal/torcontrol"
)

// dialControl connects to the client's ControlPort; the context's deadline, if any, bounds the
// connection's life.
func (n *Network) dialControl(ctx context.Context) (*torcontrol.Conn, error) {
	cc, err := torcontrol.Dial(ctx, "tcp", n.ControlAddr.String(), n.CookieFile)
	if err != nil {
		return nil, fmt.Errorf("testnet: %w", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		cc.SetDeadline(dl)
	}
	return cc, nil
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

func (n *Network) control(cmd string) (torcontrol.Reply, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cc, err := n.dialControl(ctx)
	if err != nil {
		return torcontrol.Reply{}, err
	}
	defer cc.Close()
	return cc.Do(cmd)
}

// GetInfo returns the value of one GETINFO key of the client.
func (n *Network) GetInfo(key string) (string, error) {
	r, err := n.control("GETINFO " + key)
	if err != nil {
		return "", err
	}
	if v, ok := r.Value(key); ok {
		return v, nil
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
		toks, err := torcontrol.Fields(line)
		if err != nil {
			return nil, err
		}
		if len(toks) < 2 {
			return nil, fmt.Errorf("testnet: circuit-status line %q", line)
		}
		c := Circuit{ID: toks[0], Status: toks[1]}
		rest := toks[2:]
		if len(rest) > 0 && !strings.Contains(rest[0], "=") {
			for _, h := range strings.Split(rest[0], ",") {
				fp, nick, _ := strings.Cut(strings.TrimPrefix(h, "$"), "~")
				c.Path = append(c.Path, Hop{Fingerprint: fp, Nickname: nick})
			}
			rest = rest[1:]
		}
		c.Fields = torcontrol.KeyValues(rest)
		if v, ok := c.Fields["BUILD_FLAGS"]; ok {
			c.BuildFlags = strings.Split(v, ",")
		}
		c.Purpose, c.HSState, c.RendQuery = c.Fields["PURPOSE"], c.Fields["HS_STATE"], c.Fields["REND_QUERY"]
		c.SOCKSUsername, c.SOCKSPassword = c.Fields["SOCKS_USERNAME"], c.Fields["SOCKS_PASSWORD"]
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
