package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/gotorsocks/torsocks/internal/socks5"
)

// DefaultTorTimeout bounds one TorResolver lookup (dial, handshake and reply)
// when TorResolver.Timeout is zero.
const DefaultTorTimeout = 30 * time.Second

// TorResolver is the Resolver that asks Tor's SocksPort, one SOCKS connection
// per lookup, with the requests torsocks sends: RESOLVE (0xF0) with the name as
// ATYP 03 and port 42, RESOLVE_PTR (0xF1) with the address as ATYP 01 or 04.
// Tor's reply 4 (host unreachable: the name does not exist, or has no PTR
// data) is ErrNotFound; anything else that goes wrong is another error.
type TorResolver struct {
	// Dial connects to Tor's SocksPort.
	Dial func(ctx context.Context) (net.Conn, error)
	// Auth, if set, is sent as RFC 1929 credentials.
	Auth *socks5.Auth
	// Timeout bounds each lookup; zero means DefaultTorTimeout.
	Timeout time.Duration
}

// Resolve asks Tor for the address of name.
func (r *TorResolver) Resolve(ctx context.Context, name string) (netip.Addr, error) {
	rep, err := r.do(ctx, socks5.Request{Cmd: socks5.CmdResolve, Host: name, Port: socks5.DefaultResolvePort})
	if err != nil {
		return netip.Addr{}, err
	}
	if !rep.Addr.IsValid() {
		return netip.Addr{}, fmt.Errorf("%w: RESOLVE %s: reply without an address", socks5.ErrMalformed, name)
	}
	return rep.Addr.Unmap(), nil
}

// ResolvePTR asks Tor for the name of a.
func (r *TorResolver) ResolvePTR(ctx context.Context, a netip.Addr) (string, error) {
	rep, err := r.do(ctx, socks5.Request{Cmd: socks5.CmdResolvePTR, Host: a.WithZone("").Unmap().String(), Port: socks5.DefaultResolvePort})
	if err != nil {
		return "", err
	}
	if rep.Name == "" {
		return "", fmt.Errorf("%w: RESOLVE_PTR %v: reply without a name", ErrNotFound, a)
	}
	return rep.Name, nil
}

// do runs one request on a new connection to Tor.
func (r *TorResolver) do(ctx context.Context, req socks5.Request) (socks5.Reply, error) {
	if r.Dial == nil {
		return socks5.Reply{}, errors.New("dns: TorResolver has no Dial")
	}
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = DefaultTorTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := r.Dial(ctx)
	if err != nil {
		return socks5.Reply{}, fmt.Errorf("%s: connecting to Tor: %w", req, err)
	}
	defer conn.Close()
	dl, _ := ctx.Deadline()
	conn.SetDeadline(dl)
	// Unblock the handshake as soon as ctx ends (cancellation, not only the deadline).
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	rep, err := socks5.Handshake(conn, req, r.Auth)
	var re *socks5.ReplyError
	switch {
	case errors.As(err, &re) && re.Code == socks5.ReplyHostUnreachable:
		return rep, fmt.Errorf("%w: %s: %v", ErrNotFound, req, err)
	case err != nil && ctx.Err() != nil:
		return rep, fmt.Errorf("%s: %w (%v)", req, ctx.Err(), err)
	case err != nil:
		return rep, fmt.Errorf("%s: %w", req, err)
	}
	return rep, nil
}
