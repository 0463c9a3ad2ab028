// Package config turns torsocks' command line, torsocks.conf and TORSOCKS_* environment into one
// validated Invocation: what to run and with which settings. Its one job is that; it does no I/O of
// its own (the caller passes getenv and readFile) and enforces nothing.
//
// Precedence: defaults < config file < environment < command-line options. Every error is one line
// and means exit status 1; errors in the file read "FILE:LINE: Key: what is wrong".
package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"strings"
	"time"
)

// Config is the effective configuration.
type Config struct {
	// Where Tor's SocksPort is: TCP (SocksAddr valid) or a unix socket (SocksUnix != "").
	SocksAddr netip.AddrPort
	SocksUnix string
	// SocksAddrV6 is an optional IPv6 SocksPort for IPV6_V6ONLY sockets; zero if unset.
	SocksAddrV6    netip.AddrPort
	OnionAddrRange netip.Prefix // IPv4
	Auth           *Auth        // nil: no SOCKS5 credentials
	AllowInbound   bool
	// AllowOutboundLocalhost: 0 refuse loopback, 1 TCP to loopback goes direct, 2 UDP too.
	AllowOutboundLocalhost int
	IsolatePID             bool // per-process random credentials; never together with Auth
	// KeepCapabilities: a root program keeps the capabilities that reconfigure the network or the
	// kernel (normally dropped from all its sets, see launch.DroppedCapabilities).
	KeepCapabilities bool
	EnableIPv6       bool // false: socket(AF_INET6) fails with ENOSYS, as in torsocks' default
	// VetReceivedSockets: recvmsg/recvmmsg are served by the supervisor, which refuses (EACCES)
	// messages carrying sockets that could reach the network around Tor.
	VetReceivedSockets bool
	// SealedNetwork: the program's TCP sockets are made in the sandbox network namespace too, and
	// the supervisor joins them to its own connections to Tor (the default).
	SealedNetwork bool
	// AsyncConnect: with SealedNetwork, a non-blocking connect returns EINPROGRESS at once and
	// completes (or fails with the errno a blocking one gets) when Tor has answered.
	AsyncConnect   bool
	LogLevel       int // LogNone..LogDebug
	LogTime        bool
	LogFile        string        // "" = stderr
	ConnectTimeout time.Duration // SOCKS handshake timeout
	DNSMode        string        // DNSMap or DNSResolve
	// TorStart (TorStartAuto, TorStartNever, TorStartAlways): whether torsocks may start a tor of
	// its own for the user (internal/torstart).
	TorStart string
	// SocksExplicit: a SocksPort was chosen (see socksExplicit): TorAddress or TorPort from the
	// environment or the command line, or other than the defaults in the file; or TorAddressIPv6.
	// An explicit SocksPort never makes torsocks start a tor.
	SocksExplicit       bool
	TorConfig           string        // extra torrc lines for the tor torsocks starts ("" none)
	TorBinary           string        // the tor it starts: a path, or a name looked up on PATH
	TorBootstrapTimeout time.Duration // how long to wait for that tor to bootstrap
	TorIdleTime         time.Duration // how long that tor stays up after the last torsocks exits
	ConfigFile          string        // the file that was read ("" if none)
	Warnings            []string      // non-fatal: missing default config file, unknown or repeated keys

	// Sources tells where each setting came from, by config-file key name: "default",
	// "FILE:LINE", "TORSOCKS_TOR_PORT", "--port"...
	Sources map[string]string
}

// Auth is a pair of RFC 1929 credentials.
type Auth struct{ Username, Password string }

// Invocation is a parsed command line with its configuration.
type Invocation struct {
	Config  Config
	Command []string // program and arguments; for --shell []string{$SHELL or /bin/sh}; for on/off/show the word
	Action  Action
	Shell   bool // --shell: Command is the user's shell (torsocks prints "New torified shell coming right up...")
}

// Parse reads the command line (args = os.Args[1:]), the environment and the config file.
//
// For Help, Version and OnOffShow the environment and config file are not read (as in torsocks) and
// Config holds the defaults. A config file named by --config or TORSOCKS_CONF_FILE must exist; a
// missing /etc/tor/torsocks.conf means the defaults, with a warning as torsocks gives.
func Parse(args []string, getenv func(string) (string, bool), readFile func(string) ([]byte, error)) (*Invocation, error) {
	if len(args) == 0 {
		return nil, &UsageError{Msg: "no command given: torsocks [OPTIONS] COMMAND [ARG...]", ShowUsage: true}
	}
	cl, err := parseCommandLine(args, getenv)
	if err != nil {
		return nil, err
	}
	inv := &Invocation{Command: cl.command, Action: cl.action, Shell: cl.shell}
	if cl.action != Run && cl.action != Doctor { // --doctor reports the configuration in effect
		cfg, err := build(defaults())
		if err != nil {
			return nil, err
		}
		inv.Config = *cfg
		return inv, nil
	}

	env, err := parseEnv(getenv)
	if err != nil {
		return nil, err
	}

	path, from := DefaultConfigFile, ""
	if v, ok := getenv(EnvConfFile); ok && v != "" {
		path, from = v, EnvConfFile
	}
	if cl.configFile != "" {
		path, from = cl.configFile, "--config"
	}
	var (
		file     FileSettings
		warnings []string
		read     string
	)
	data, err := readFile(path)
	switch {
	case err == nil:
		read = path
		file, warnings, err = ParseConfigFile(path, data)
		if err != nil {
			return nil, err
		}
	case errors.Is(err, fs.ErrNotExist) && from == "":
		warnings = append(warnings, fmt.Sprintf("config file %s not found: using the defaults", path))
	default:
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		if from != "" {
			return nil, fmt.Errorf("config file %s (from %s): %v", path, from, err)
		}
		return nil, fmt.Errorf("config file %s: %v", path, err)
	}

	s := defaults()
	s.mergeFrom(&file)
	s.mergeFrom(env)
	s.mergeFrom(&cl.set)
	cfg, err := build(s)
	if err != nil {
		return nil, err
	}
	cfg.ConfigFile = read
	cfg.Warnings = append(warnings, cfg.Warnings...)
	inv.Config = *cfg
	return inv, nil
}

// parseEnv reads the TORSOCKS_* variables. An empty variable counts as unset.
func parseEnv(getenv func(string) (string, bool)) (*Settings, error) {
	var s Settings
	for _, e := range envVars {
		v, ok := getenv(e.name)
		if !ok || v == "" {
			continue
		}
		if err := e.set(&s, v, e.name); err != nil {
			return nil, fmt.Errorf("%s: %w", e.name, err)
		}
	}
	return &s, nil
}

// build checks the merged settings as a whole and makes the Config.
func build(s *Settings) (*Config, error) {
	c := &Config{
		OnionAddrRange:         s.OnionAddrRange.Val,
		AllowInbound:           s.AllowInbound.Val,
		AllowOutboundLocalhost: s.AllowOutboundLocalhost.Val,
		IsolatePID:             s.IsolatePID.Val,
		KeepCapabilities:       s.KeepCapabilities.Val,
		EnableIPv6:             s.EnableIPv6.Val,
		VetReceivedSockets:     s.VetReceivedSockets.Val,
		SealedNetwork:          s.SealedNetwork.Val,
		AsyncConnect:           s.AsyncConnect.Val,
		LogLevel:               s.LogLevel.Val,
		LogTime:                s.LogTime.Val,
		LogFile:                s.LogFile.Val,
		ConnectTimeout:         s.ConnectTimeout.Val,
		DNSMode:                s.DNSMode.Val,
		TorStart:               s.TorStart.Val,
		TorConfig:              s.TorConfig.Val,
		TorBinary:              s.TorBinary.Val,
		TorBootstrapTimeout:    s.TorBootstrapTimeout.Val,
		TorIdleTime:            s.TorIdleTime.Val,
		SocksExplicit:          socksExplicit(s),
		Sources: map[string]string{
			"TorAddress":             s.TorAddress.From,
			"TorPort":                s.TorPort.From,
			"OnionAddrRange":         s.OnionAddrRange.From,
			"AllowInbound":           s.AllowInbound.From,
			"AllowOutboundLocalhost": s.AllowOutboundLocalhost.From,
			"IsolatePID":             s.IsolatePID.From,
			"KeepCapabilities":       s.KeepCapabilities.From,
			"EnableIPv6":             s.EnableIPv6.From,
			"VetReceivedSockets":     s.VetReceivedSockets.From,
			"SealedNetwork":          s.SealedNetwork.From,
			"AsyncConnect":           s.AsyncConnect.From,
			"ConnectTimeout":         s.ConnectTimeout.From,
			"DNSMode":                s.DNSMode.From,
			"TorStart":               s.TorStart.From,
			"TorConfig":              s.TorConfig.From,
			"TorBinary":              s.TorBinary.From,
			"TorBootstrapTimeout":    s.TorBootstrapTimeout.From,
			"TorIdleTime":            s.TorIdleTime.From,
			"LogLevel":               s.LogLevel.From,
			"LogTime":                s.LogTime.From,
			"LogFile":                s.LogFile.From,
		},
	}
	if a := s.TorAddress.Val; a.Unix != "" {
		c.SocksUnix = a.Unix
	} else {
		c.SocksAddr = netip.AddrPortFrom(a.Addr, s.TorPort.Val)
	}
	if s.TorAddressIPv6.Set {
		ap := s.TorAddressIPv6.Val
		if ap.Port() == 0 {
			ap = netip.AddrPortFrom(ap.Addr(), s.TorPort.Val)
		}
		c.SocksAddrV6 = ap
		c.Sources["TorAddressIPv6"] = s.TorAddressIPv6.From
	}

	switch u, p := s.Username, s.Password; {
	case u.Set && p.Set:
		c.Auth = &Auth{Username: u.Val, Password: p.Val}
		c.Sources["SOCKS5Username"] = u.From
		c.Sources["SOCKS5Password"] = p.From
	case u.Set:
		return nil, fmt.Errorf("a SOCKS5 username (from %s) needs a password too: set SOCKS5Password, %s or -p", u.From, EnvPassword)
	case p.Set:
		return nil, fmt.Errorf("a SOCKS5 password (from %s) needs a username too: set SOCKS5Username, %s or -u", p.From, EnvUsername)
	}
	if c.TorStart == TorStartAlways && c.SocksExplicit {
		src := s.TorAddress.From
		if src == "default" {
			src = s.TorPort.From
		}
		if src == "default" {
			src = s.TorAddressIPv6.From
		}
		return nil, fmt.Errorf("TorStart always (from %s) and an explicit SocksPort (from %s) exclude each other: "+
			"torsocks starts its own tor only where no SocksPort is configured; drop one of them", s.TorStart.From, src)
	}
	if c.IsolatePID && c.Auth != nil {
		return nil, fmt.Errorf("IsolatePID (from %s) and SOCKS5 credentials (from %s) exclude each other: "+
			"isolation makes its own credentials; drop one of them", s.IsolatePID.From, s.Username.From)
	}
	return c, nil
}

// socksExplicit tells whether the settings name a SocksPort: TorAddress or TorPort from the
// environment or the command line (whatever the value), from the config file with a value other
// than the default (Debian's stock torsocks.conf restates 127.0.0.1 and 9050: that is no choice of
// the user's), or any TorAddressIPv6.
func socksExplicit(s *Settings) bool {
	byUser := func(from string) bool { return strings.HasPrefix(from, "TORSOCKS_") || strings.HasPrefix(from, "-") }
	addr, port := s.TorAddress, s.TorPort
	return byUser(addr.From) || byUser(port.From) || s.TorAddressIPv6.Set ||
		addr.Val != (TorAddr{Addr: DefaultTorAddress}) || port.Val != DefaultTorPort
}

// Describe lists the effective configuration, one "Key value (source)" line per setting, for
// --debug. The password is never shown.
func (c *Config) Describe() []string {
	var lines []string
	add := func(key, val string) {
		if src := c.Sources[key]; src != "" {
			val += " (" + src + ")"
		}
		lines = append(lines, key+" "+val)
	}
	if c.ConfigFile != "" {
		lines = append(lines, "config file "+c.ConfigFile)
	} else {
		lines = append(lines, "config file none")
	}
	if c.SocksUnix != "" {
		add("TorAddress", "unix:"+c.SocksUnix)
	} else {
		add("TorAddress", c.SocksAddr.Addr().String())
		add("TorPort", fmt.Sprint(c.SocksAddr.Port()))
	}
	if c.SocksAddrV6.IsValid() {
		add("TorAddressIPv6", c.SocksAddrV6.String())
	}
	add("OnionAddrRange", c.OnionAddrRange.String())
	if c.Auth != nil {
		add("SOCKS5Username", show(c.Auth.Username))
		add("SOCKS5Password", "(hidden)")
	}
	add("IsolatePID", fmt.Sprint(b2i(c.IsolatePID)))
	add("AllowInbound", fmt.Sprint(b2i(c.AllowInbound)))
	add("AllowOutboundLocalhost", fmt.Sprint(c.AllowOutboundLocalhost))
	add("EnableIPv6", fmt.Sprint(b2i(c.EnableIPv6)))
	add("VetReceivedSockets", fmt.Sprint(b2i(c.VetReceivedSockets)))
	add("SealedNetwork", fmt.Sprint(b2i(c.SealedNetwork)))
	add("AsyncConnect", fmt.Sprint(b2i(c.AsyncConnect)))
	add("ConnectTimeout", c.ConnectTimeout.String())
	add("DNSMode", c.DNSMode)
	add("KeepCapabilities", fmt.Sprint(b2i(c.KeepCapabilities)))
	add("TorStart", c.TorStart)
	if c.TorConfig != "" {
		add("TorConfig", show(c.TorConfig))
	}
	add("TorBinary", show(c.TorBinary))
	add("TorBootstrapTimeout", c.TorBootstrapTimeout.String())
	add("TorIdleTime", c.TorIdleTime.String())
	add("LogLevel", fmt.Sprint(c.LogLevel))
	add("LogTime", fmt.Sprint(b2i(c.LogTime)))
	if c.LogFile == "" {
		add("LogFile", "stderr")
	} else {
		add("LogFile", show(c.LogFile))
	}
	return lines
}

// String is Describe on one line.
func (c *Config) String() string { return strings.Join(c.Describe(), ", ") }

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
