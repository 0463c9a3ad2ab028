package config

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// This file holds the value parsers shared by the three layers (file, environment, command line).
// Each returns an error whose text names the offending value, so the caller only prefixes where the
// value came from ("FILE:LINE: Key: ", "TORSOCKS_X: ", "--flag: ").

// maxUnixPath is the longest socket path that fits in sockaddr_un.sun_path with its terminating NUL.
const maxUnixPath = 107

// maxConnectTimeout bounds ConnectTimeout: anything longer is a typo, not a wish.
const maxConnectTimeout = 24 * time.Hour

// show renders a value for an error message: as is when it is plain text, quoted otherwise, so that
// an error is always one printable line whatever the input held.
func show(v string) string {
	if v == "" {
		return `""`
	}
	for _, r := range v {
		if r == utf8.RuneError || !unicode.IsPrint(r) || r == ' ' || r == '"' {
			return strconv.Quote(v)
		}
	}
	if len(v) > 80 {
		return strconv.Quote(v[:77]) + "..."
	}
	return v
}

// TorAddr is where Tor's SocksPort listens: a numeric address (Addr valid) or a unix socket (Unix set).
type TorAddr struct {
	Addr netip.Addr
	Unix string
}

func (a TorAddr) String() string {
	if a.Unix != "" {
		return "unix:" + a.Unix
	}
	return a.Addr.String()
}

func parseTorAddress(v string) (TorAddr, error) {
	if path, ok := strings.CutPrefix(v, "unix:"); ok || strings.HasPrefix(v, "/") {
		if !ok {
			path = v
		}
		if err := checkUnixPath(path); err != nil {
			return TorAddr{}, fmt.Errorf("%s: %w", show(v), err)
		}
		return TorAddr{Unix: path}, nil
	}
	addr, err := parseNumericAddr(v)
	if err != nil {
		return TorAddr{}, fmt.Errorf("%s is not a numeric IPv4 or IPv6 address nor a unix socket path "+
			"(host names are refused: resolving one would happen outside Tor)", show(v))
	}
	if err := checkSocksAddr(addr); err != nil {
		return TorAddr{}, err
	}
	return TorAddr{Addr: addr}, nil
}

func checkUnixPath(path string) error {
	switch {
	case path == "":
		return errors.New("the unix socket path is empty")
	case !strings.HasPrefix(path, "/"):
		return errors.New("the unix socket path must be absolute")
	case strings.IndexByte(path, 0) >= 0:
		return errors.New("the unix socket path contains a NUL byte")
	case len(path) > maxUnixPath:
		return fmt.Errorf("the unix socket path is %d bytes long, at most %d fit in a socket address", len(path), maxUnixPath)
	}
	return nil
}

// parseNumericAddr accepts a numeric IPv4 or IPv6 address, the latter also in brackets. An IPv4
// address written as IPv4-mapped IPv6 is the IPv4 address.
func parseNumericAddr(v string) (netip.Addr, error) {
	if len(v) > 2 && v[0] == '[' && v[len(v)-1] == ']' {
		v = v[1 : len(v)-1]
	}
	addr, err := netip.ParseAddr(v)
	if err != nil {
		return netip.Addr{}, err
	}
	return addr.Unmap(), nil
}

func checkSocksAddr(addr netip.Addr) error {
	switch {
	case addr.IsUnspecified():
		loop := "127.0.0.1"
		if addr.Is6() {
			loop = "::1"
		}
		return fmt.Errorf("%s is the unspecified address, not one Tor can be reached at (did you mean %s?)", addr, loop)
	case addr.IsMulticast():
		return fmt.Errorf("%s is a multicast address, not one Tor can be reached at", addr)
	}
	return nil
}

// parseTorAddressIPv6 reads TorAddressIPv6: an IPv6 address, optionally "[addr]:port". Port 0 in the
// result means "the same port as TorPort".
func parseTorAddressIPv6(v string) (netip.AddrPort, error) {
	if strings.HasPrefix(v, "[") && !strings.HasSuffix(v, "]") {
		ap, err := netip.ParseAddrPort(v)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("%s is not an IPv6 address or [address]:port", show(v))
		}
		if ap.Port() == 0 {
			return netip.AddrPort{}, fmt.Errorf("%s: port 0 is not a port (1-65535)", show(v))
		}
		if err := checkIPv6(v, ap.Addr()); err != nil {
			return netip.AddrPort{}, err
		}
		return ap, nil
	}
	inner := v
	if len(v) > 2 && v[0] == '[' && v[len(v)-1] == ']' {
		inner = v[1 : len(v)-1]
	}
	addr, err := netip.ParseAddr(inner)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%s is not an IPv6 address or [address]:port", show(v))
	}
	if err := checkIPv6(v, addr); err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(addr, 0), nil
}

func checkIPv6(v string, addr netip.Addr) error {
	if !addr.Is6() || addr.Is4In6() {
		return fmt.Errorf("%s is not an IPv6 address", show(v))
	}
	return checkSocksAddr(addr)
}

func parsePort(v string) (uint16, error) {
	if v == "" || strings.TrimLeft(v, "0123456789") != "" {
		return 0, fmt.Errorf("%s is not a port (1-65535)", show(v))
	}
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil || n < 1 || n > 65535 {
		return 0, fmt.Errorf("%s is not a port (1-65535)", show(v))
	}
	return uint16(n), nil
}

// minOnionBits is the widest OnionAddrRange accepted: wider ranges would swallow real addresses.
const minOnionBits = 8

func parseOnionRange(v string) (netip.Prefix, error) {
	if !strings.Contains(v, "/") {
		return netip.Prefix{}, fmt.Errorf("%s is not an IPv4 range: it needs a /bits length (like 127.42.42.0/24)", show(v))
	}
	p, err := netip.ParsePrefix(v)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%s is not an IPv4 range like 127.42.42.0/24", show(v))
	}
	if !p.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("%s is not an IPv4 range: stand-in addresses for .onion names are IPv4", show(v))
	}
	if p.Bits() < minOnionBits {
		return netip.Prefix{}, fmt.Errorf("%s is too wide: at most a /%d", show(v), minOnionBits)
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("%s has bits set past its /%d length (did you mean %s?)", show(v), p.Bits(), m)
	}
	return p, nil
}

func parseBool(v string) (bool, error) {
	switch strings.ToLower(v) {
	case "1", "yes", "true", "on":
		return true, nil
	case "0", "no", "false", "off":
		return false, nil
	}
	return false, fmt.Errorf("%s is not a boolean (0/1, no/yes, false/true, off/on)", show(v))
}

func parseLocalhost(v string) (int, error) {
	switch v {
	case "2":
		return 2, nil
	}
	if b, err := parseBool(v); err == nil {
		if b {
			return 1, nil
		}
		return 0, nil
	}
	return 0, fmt.Errorf("%s is not 0 (refuse), 1 (TCP direct) or 2 (TCP and UDP direct)", show(v))
}

// maxCredential is the longest username or password RFC 1929 can carry (a one-byte length).
const maxCredential = 255

func parseCredential(what, v string) (string, error) {
	switch {
	case v == "":
		return "", fmt.Errorf("the SOCKS5 %s is empty (RFC 1929 needs 1 to %d bytes)", what, maxCredential)
	case len(v) > maxCredential:
		return "", fmt.Errorf("the SOCKS5 %s is %d bytes long, at most %d fit in a SOCKS5 request", what, len(v), maxCredential)
	case strings.IndexByte(v, 0) >= 0:
		return "", fmt.Errorf("the SOCKS5 %s contains a NUL byte", what)
	}
	return v, nil
}

// parseTimeout accepts seconds ("120", "2.5") or a Go duration ("2m", "90s").
func parseTimeout(v string) (time.Duration, error) {
	return parsePositiveTime(v, "a connection to Tor must time out")
}

func parseBootstrapTimeout(v string) (time.Duration, error) {
	return parsePositiveTime(v, "waiting for Tor to bootstrap must time out")
}

func parseIdleTime(v string) (time.Duration, error) {
	return parsePositiveTime(v, "use TorStart never to keep no tor of our own")
}

// parsePositiveTime reads seconds ("30", "1.5") or a Go duration ("2m"); why says, in the error
// for zero or less, why the time must be positive.
func parsePositiveTime(v, why string) (time.Duration, error) {
	var d time.Duration
	if f, err := strconv.ParseFloat(v, 64); err == nil && strings.TrimLeft(v, "0123456789.") == "" {
		if math.IsNaN(f) || f > maxConnectTimeout.Seconds() {
			return 0, fmt.Errorf("%s seconds is longer than the %v maximum", show(v), maxConnectTimeout)
		}
		d = time.Duration(f * float64(time.Second))
	} else if d, err = time.ParseDuration(v); err != nil {
		return 0, fmt.Errorf("%s is not a number of seconds nor a duration like 90s or 2m", show(v))
	}
	switch {
	case d <= 0:
		return 0, fmt.Errorf("%s is not a positive time (%s)", show(v), why)
	case d > maxConnectTimeout:
		return 0, fmt.Errorf("%s is longer than the %v maximum", show(v), maxConnectTimeout)
	}
	return d, nil
}

// DNS modes (see the DNSMode key).
const (
	DNSMap     = "map"
	DNSResolve = "resolve"
)

func parseDNSMode(v string) (string, error) {
	switch v {
	case DNSMap, DNSResolve:
		return v, nil
	}
	return "", fmt.Errorf("%s is not a DNS mode (map or resolve)", show(v))
}

// TorStart modes: whether torsocks starts a tor of its own for the user.
const (
	// TorStartAuto starts one when no SocksPort is configured and nothing answers on the default.
	TorStartAuto = "auto"
	// TorStartNever never starts one (the C torsocks' behaviour).
	TorStartNever = "never"
	// TorStartAlways uses the per-user tor even when something answers on the default.
	TorStartAlways = "always"
)

func parseTorStart(v string) (string, error) {
	switch v {
	case TorStartAuto, TorStartNever, TorStartAlways:
		return v, nil
	}
	return "", fmt.Errorf("%s is not a TorStart mode (auto, never or always)", show(v))
}

// Log levels, torsocks' numbering.
const (
	LogNone    = 1
	LogError   = 2
	LogWarning = 3
	LogNotice  = 4
	LogDebug   = 5
)

func parseLogLevel(v string) (int, error) {
	if len(v) == 1 && v[0] >= '1' && v[0] <= '5' {
		return int(v[0] - '0'), nil
	}
	return 0, fmt.Errorf("%s is not a log level (1 none, 2 error, 3 warning, 4 notice, 5 debug)", show(v))
}

func parsePath(v string) (string, error) {
	if v == "" {
		return "", errors.New("the path is empty")
	}
	if strings.IndexByte(v, 0) >= 0 {
		return "", fmt.Errorf("%s contains a NUL byte", show(v))
	}
	return v, nil
}
