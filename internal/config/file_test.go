package config

import (
	"io/fs"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

const F = "/etc/tor/torsocks.conf"

// Every key, good values.
func TestFileKeys(t *testing.T) {
	tests := []struct {
		line  string
		check func(c *Config) bool
	}{
		{"TorAddress 10.1.2.3", func(c *Config) bool { return c.SocksAddr == netip.MustParseAddrPort("10.1.2.3:9050") }},
		{"TorAddress ::1", func(c *Config) bool { return c.SocksAddr == netip.MustParseAddrPort("[::1]:9050") }},
		{"TorAddress [::1]", func(c *Config) bool { return c.SocksAddr == netip.MustParseAddrPort("[::1]:9050") }},
		{"TorAddress ::ffff:10.0.0.1", func(c *Config) bool { return c.SocksAddr == netip.MustParseAddrPort("10.0.0.1:9050") }},
		{"TorAddress /run/tor/socks", func(c *Config) bool { return c.SocksUnix == "/run/tor/socks" && !c.SocksAddr.IsValid() }},
		{"TorAddress unix:/run/tor/socks", func(c *Config) bool { return c.SocksUnix == "/run/tor/socks" }},
		{"TorPort 9150", func(c *Config) bool { return c.SocksAddr.Port() == 9150 }},
		{"TorPort 1", func(c *Config) bool { return c.SocksAddr.Port() == 1 }},
		{"TorPort 65535", func(c *Config) bool { return c.SocksAddr.Port() == 65535 }},
		{"OnionAddrRange 10.192.0.0/10", func(c *Config) bool { return c.OnionAddrRange == netip.MustParsePrefix("10.192.0.0/10") }},
		{"OnionAddrRange 127.42.42.7/32", func(c *Config) bool { return c.OnionAddrRange == netip.MustParsePrefix("127.42.42.7/32") }},
		{"SOCKS5Username u\nSOCKS5Password p#w", func(c *Config) bool { return *c.Auth == Auth{"u", "p#w"} }},
		{"AllowInbound 1", func(c *Config) bool { return c.AllowInbound }},
		{"AllowInbound 0", func(c *Config) bool { return !c.AllowInbound }},
		{"AllowOutboundLocalhost 1", func(c *Config) bool { return c.AllowOutboundLocalhost == 1 }},
		{"AllowOutboundLocalhost 2", func(c *Config) bool { return c.AllowOutboundLocalhost == 2 }},
		{"AllowOutboundLocalhost yes", func(c *Config) bool { return c.AllowOutboundLocalhost == 1 }},
		{"AllowOutboundLocalhost 0", func(c *Config) bool { return c.AllowOutboundLocalhost == 0 }},
		{"IsolatePID 1", func(c *Config) bool { return c.IsolatePID }},
		{"KeepCapabilities yes", func(c *Config) bool { return c.KeepCapabilities }},
		{"EnableIPv6 0", func(c *Config) bool { return !c.EnableIPv6 }},
		{"EnableIPv6 1", func(c *Config) bool { return c.EnableIPv6 }},
		{"VetReceivedSockets 1", func(c *Config) bool { return c.VetReceivedSockets }},
		{"VetReceivedSockets no", func(c *Config) bool { return !c.VetReceivedSockets }},
		{"SealedNetwork 1", func(c *Config) bool { return c.SealedNetwork }},
		{"SealedNetwork off", func(c *Config) bool { return !c.SealedNetwork }},
		{"TorAddressIPv6 ::1", func(c *Config) bool { return c.SocksAddrV6 == netip.MustParseAddrPort("[::1]:9050") }},
		{"TorAddressIPv6 [2001:db8::1]:9150", func(c *Config) bool { return c.SocksAddrV6 == netip.MustParseAddrPort("[2001:db8::1]:9150") }},
		{"ConnectTimeout 30", func(c *Config) bool { return c.ConnectTimeout == 30*time.Second }},
		{"ConnectTimeout 2m", func(c *Config) bool { return c.ConnectTimeout == 2*time.Minute }},
		{"ConnectTimeout 0.25", func(c *Config) bool { return c.ConnectTimeout == 250*time.Millisecond }},
		{"DNSMode resolve", func(c *Config) bool { return c.DNSMode == DNSResolve }},
		{"DNSMode map", func(c *Config) bool { return c.DNSMode == DNSMap }},
		{"TorStart always", func(c *Config) bool { return c.TorStart == TorStartAlways }},
		{"TorStart never", func(c *Config) bool { return c.TorStart == TorStartNever }},
		{"TorConfig /etc/tor/extra", func(c *Config) bool { return c.TorConfig == "/etc/tor/extra" }},
		{"TorBinary /usr/local/bin/tor", func(c *Config) bool { return c.TorBinary == "/usr/local/bin/tor" }},
		{"TorBootstrapTimeout 3m", func(c *Config) bool { return c.TorBootstrapTimeout == 3*time.Minute }},
		{"TorIdleTime 0.5", func(c *Config) bool { return c.TorIdleTime == 500*time.Millisecond }},
	}
	for _, tt := range tests {
		inv := mustParse(t, []string{"true"}, envOf(), conf(tt.line))
		if !tt.check(&inv.Config) {
			t.Errorf("%q: %s", tt.line, inv.Config.String())
		}
		if inv.Config.ConfigFile != F || len(inv.Config.Warnings) != 0 {
			t.Errorf("%q: file %q warnings %q", tt.line, inv.Config.ConfigFile, inv.Config.Warnings)
		}
	}
}

func TestBooleans(t *testing.T) {
	for _, v := range []string{"1", "yes", "true", "on", "YES", "True", "ON"} {
		inv := mustParse(t, []string{"true"}, envOf(), conf("AllowInbound "+v))
		if !inv.Config.AllowInbound {
			t.Errorf("AllowInbound %s read as false", v)
		}
	}
	for _, v := range []string{"0", "no", "false", "off", "No"} {
		inv := mustParse(t, []string{"true"}, envOf(), conf("AllowInbound 1\nAllowInbound "+v))
		if inv.Config.AllowInbound {
			t.Errorf("AllowInbound %s read as true", v)
		}
	}
}

// Bad values: the exact "FILE:LINE: Key: what" messages.
func TestFileErrors(t *testing.T) {
	tests := []struct{ text, want string }{
		{"# c\n\n\n\n\n\nTorPort 70000\n", F + ":7: TorPort: 70000 is not a port (1-65535)"},
		{"TorPort 0", F + ":1: TorPort: 0 is not a port (1-65535)"},
		{"TorPort -1", F + ":1: TorPort: -1 is not a port (1-65535)"},
		{"TorPort 9050x", F + ":1: TorPort: 9050x is not a port (1-65535)"},
		{"TorPort", F + ":1: TorPort has no value"},
		{"TorPort   # no value", F + ":1: TorPort has no value"},
		{"TorPort 9050 9051", F + ":1: TorPort: expected one value, found 2: \"9050 9051\""},
		{"TorAddress tor.example", F + ":1: TorAddress: tor.example is not a numeric IPv4 or IPv6 address nor a unix socket path (host names are refused: resolving one would happen outside Tor)"},
		{"TorAddress 0.0.0.0", F + ":1: TorAddress: 0.0.0.0 is the unspecified address, not one Tor can be reached at (did you mean 127.0.0.1?)"},
		{"TorAddress ::", F + ":1: TorAddress: :: is the unspecified address, not one Tor can be reached at (did you mean ::1?)"},
		{"TorAddress 224.0.0.1", F + ":1: TorAddress: 224.0.0.1 is a multicast address, not one Tor can be reached at"},
		{"TorAddress unix:", F + ":1: TorAddress: unix:: the unix socket path is empty"},
		{"TorAddress /" + strings.Repeat("a", 107), F + ":1: TorAddress: \"/" + strings.Repeat("a", 76) + "\"...: the unix socket path is 108 bytes long, at most 107 fit in a socket address"},
		{"OnionAddrRange 127.42.42.0", F + ":1: OnionAddrRange: 127.42.42.0 is not an IPv4 range: it needs a /bits length (like 127.42.42.0/24)"},
		{"OnionAddrRange 127.42.42.0/33", F + ":1: OnionAddrRange: 127.42.42.0/33 is not an IPv4 range like 127.42.42.0/24"},
		{"OnionAddrRange fd00::/64", F + ":1: OnionAddrRange: fd00::/64 is not an IPv4 range: stand-in addresses for .onion names are IPv4"},
		{"OnionAddrRange 0.0.0.0/0", F + ":1: OnionAddrRange: 0.0.0.0/0 is too wide: at most a /8"},
		{"OnionAddrRange 127.42.42.128/24", F + ":1: OnionAddrRange: 127.42.42.128/24 has bits set past its /24 length (did you mean 127.42.42.0/24?)"},
		{"SOCKS5Username " + strings.Repeat("u", 256), F + ":1: SOCKS5Username: the SOCKS5 username is 256 bytes long, at most 255 fit in a SOCKS5 request"},
		{"SOCKS5Password " + strings.Repeat("p", 256), F + ":1: SOCKS5Password: the SOCKS5 password is 256 bytes long, at most 255 fit in a SOCKS5 request"},
		{"AllowInbound 2", F + ":1: AllowInbound: 2 is not a boolean (0/1, no/yes, false/true, off/on)"},
		{"AllowOutboundLocalhost 3", F + ":1: AllowOutboundLocalhost: 3 is not 0 (refuse), 1 (TCP direct) or 2 (TCP and UDP direct)"},
		{"IsolatePID maybe", F + ":1: IsolatePID: maybe is not a boolean (0/1, no/yes, false/true, off/on)"},
		{"EnableIPv6 -", F + ":1: EnableIPv6: - is not a boolean (0/1, no/yes, false/true, off/on)"},
		{"VetReceivedSockets 2", F + ":1: VetReceivedSockets: 2 is not a boolean (0/1, no/yes, false/true, off/on)"},
		{"SealedNetwork maybe", F + ":1: SealedNetwork: maybe is not a boolean (0/1, no/yes, false/true, off/on)"},
		{"TorAddressIPv6 10.0.0.1", F + ":1: TorAddressIPv6: 10.0.0.1 is not an IPv6 address"},
		{"TorAddressIPv6 ::ffff:10.0.0.1", F + ":1: TorAddressIPv6: ::ffff:10.0.0.1 is not an IPv6 address"},
		{"TorAddressIPv6 [::1]:0", F + ":1: TorAddressIPv6: [::1]:0: port 0 is not a port (1-65535)"},
		{"TorAddressIPv6 [::1]:x", F + ":1: TorAddressIPv6: [::1]:x is not an IPv6 address or [address]:port"},
		{"ConnectTimeout -5", F + ":1: ConnectTimeout: -5 is not a number of seconds nor a duration like 90s or 2m"},
		{"ConnectTimeout -5s", F + ":1: ConnectTimeout: -5s is not a positive time (a connection to Tor must time out)"},
		{"ConnectTimeout 90000", F + ":1: ConnectTimeout: 90000 seconds is longer than the 24h0m0s maximum"},
		{"ConnectTimeout 1e3", F + ":1: ConnectTimeout: 1e3 is not a number of seconds nor a duration like 90s or 2m"},
		{"DNSMode MAP", F + ":1: DNSMode: MAP is not a DNS mode (map or resolve)"},
		{"TorStart yes", F + ":1: TorStart: yes is not a TorStart mode (auto, never or always)"},
		{"TorBootstrapTimeout 0", F + ":1: TorBootstrapTimeout: 0 is not a positive time (waiting for Tor to bootstrap must time out)"},
		{"TorIdleTime -1s", F + ":1: TorIdleTime: -1s is not a positive time (use TorStart never to keep no tor of our own)"},
		{"TorPort \x00", F + ":1: TorPort: \"\\x00\" is not a port (1-65535)"},
	}
	for _, tt := range tests {
		err := parseErr(t, []string{"true"}, envOf(), conf(tt.text))
		if err.Error() != tt.want {
			t.Errorf("%q:\n got %q\nwant %q", tt.text, err, tt.want)
		}
	}
}

func TestFileWarnings(t *testing.T) {
	tests := []struct {
		text  string
		warns []string
		check func(c *Config) bool
	}{
		{"Foo 1\n", []string{F + ":1: unknown key Foo ignored"}, nil},
		{"Foo\n", []string{F + ":1: unknown key Foo ignored"}, nil},
		{"torport 9051\n", []string{F + ":1: unknown key torport ignored: keys are case-sensitive, did you mean TorPort?"},
			func(c *Config) bool { return c.SocksAddr.Port() == 9050 }},
		{"TorPort 9051\nTorPort 9052\n", []string{F + ":2: TorPort given again (first on line 1): the last value wins"},
			func(c *Config) bool { return c.SocksAddr.Port() == 9052 }},
	}
	for _, tt := range tests {
		inv := mustParse(t, []string{"true"}, envOf(), conf(tt.text))
		if !reflect.DeepEqual(inv.Config.Warnings, tt.warns) {
			t.Errorf("%q: warnings %q, want %q", tt.text, inv.Config.Warnings, tt.warns)
		}
		if tt.check != nil && !tt.check(&inv.Config) {
			t.Errorf("%q: %s", tt.text, inv.Config.String())
		}
	}
}

// The syntax torsocks.conf files in the wild use: the Debian default file parses without warnings.
func TestDebianDefaultFile(t *testing.T) {
	const debian = `# This is the configuration for libtorsocks (transparent socks) for use
# with tor, which is providing a socks server on port 9050 by default.
TorAddress 127.0.0.1
TorPort 9050

OnionAddrRange 127.42.42.0/24
#SOCKS5Username <username>
#SOCKS5Password <password>
#AllowInbound 1
#AllowOutboundLocalhost 1
#IsolatePID 1
#EnableIPv6 1`
	s, warns, err := ParseConfigFile(F, []byte(debian))
	if err != nil || len(warns) != 0 {
		t.Fatalf("err %v warnings %q", err, warns)
	}
	if s.TorPort.Val != 9050 || s.TorPort.From != F+":4" || s.OnionAddrRange.Val.String() != "127.42.42.0/24" {
		t.Errorf("settings %+v", s)
	}
}

// One test per parser bug of the C torsocks listed in the facts file.
func TestTorsocksParserBugsAbsent(t *testing.T) {
	t.Run("last line without newline keeps its last character", func(t *testing.T) {
		inv := mustParse(t, []string{"true"}, envOf(), conf("TorAddress 127.0.0.1\nTorPort 9051"))
		if got := inv.Config.SocksAddr.Port(); got != 9051 {
			t.Errorf("port %d, want 9051 (torsocks reads 905)", got)
		}
	})
	t.Run("empty file means the defaults", func(t *testing.T) {
		for _, text := range []string{"", "\n", "   \n\t\n", "# only a comment", "\ufeff"} {
			inv := mustParse(t, []string{"true"}, envOf(), conf(text))
			if inv.Config.SocksAddr != netip.MustParseAddrPort("127.0.0.1:9050") || len(inv.Config.Warnings) != 0 {
				t.Errorf("%q: %s %q", text, inv.Config.String(), inv.Config.Warnings)
			}
		}
	})
	t.Run("username without password is an error, not silently no auth", func(t *testing.T) {
		err := parseErr(t, []string{"true"}, envOf(), conf("SOCKS5Username alice\n"))
		if want := "a SOCKS5 username (from " + F + ":1) needs a password too: set SOCKS5Password, TORSOCKS_PASSWORD or -p"; err.Error() != want {
			t.Errorf("got %q", err)
		}
		err = parseErr(t, []string{"true"}, envOf(), conf("SOCKS5Password pw\n"))
		if !strings.HasPrefix(err.Error(), "a SOCKS5 password (from "+F+":1) needs a username too") {
			t.Errorf("got %q", err)
		}
	})
	t.Run("yes is true", func(t *testing.T) {
		inv := mustParse(t, []string{"true"}, envOf(), conf("IsolatePID yes\nAllowInbound yes\nEnableIPv6 no\n"))
		if c := inv.Config; !c.IsolatePID || !c.AllowInbound || c.EnableIPv6 {
			t.Errorf("%s", c.String())
		}
	})
	t.Run("key without value is an error, not a crash", func(t *testing.T) {
		for _, k := range fileKeys {
			err := parseErr(t, []string{"true"}, envOf(), conf("\n"+k.key+"\n"))
			if want := F + ":2: " + k.key + " has no value"; err.Error() != want {
				t.Errorf("got %q, want %q", err, want)
			}
		}
	})
	t.Run("comments after values", func(t *testing.T) {
		inv := mustParse(t, []string{"true"}, envOf(), conf("TorPort 9051 # Tor Browser is 9150\nTorAddress 127.0.0.2\t#local\n"))
		if got := inv.Config.SocksAddr; got != netip.MustParseAddrPort("127.0.0.2:9051") {
			t.Errorf("got %v", got)
		}
	})
	t.Run("CRLF line ends", func(t *testing.T) {
		inv := mustParse(t, []string{"true"}, envOf(), conf("TorPort 9051\r\nTorAddress 127.0.0.2\r\n"))
		if got := inv.Config.SocksAddr; got != netip.MustParseAddrPort("127.0.0.2:9051") {
			t.Errorf("got %v", got)
		}
	})
	t.Run("a config error is returned before anything runs", func(t *testing.T) {
		// torsocks exits the wrapped program from its constructor; Parse returns an error instead.
		parseErr(t, []string{"true"}, envOf(), conf("TorPort x\n"))
	})
}

func TestConfigFilePath(t *testing.T) {
	files := filesOf("/env.conf", "TorPort 1001", "/flag.conf", "TorPort 1002", F, "TorPort 1000")
	tests := []struct {
		name string
		args []string
		env  []string
		port uint16
		file string
	}{
		{"default", []string{"true"}, nil, 1000, F},
		{"TORSOCKS_CONF_FILE", []string{"true"}, []string{"TORSOCKS_CONF_FILE=/env.conf"}, 1001, "/env.conf"},
		{"empty TORSOCKS_CONF_FILE is unset", []string{"true"}, []string{"TORSOCKS_CONF_FILE="}, 1000, F},
		{"--config over TORSOCKS_CONF_FILE", []string{"--config", "/flag.conf", "true"}, []string{"TORSOCKS_CONF_FILE=/env.conf"}, 1002, "/flag.conf"},
	}
	for _, tt := range tests {
		inv := mustParse(t, tt.args, envOf(tt.env...), files)
		if inv.Config.SocksAddr.Port() != tt.port || inv.Config.ConfigFile != tt.file {
			t.Errorf("%s: port %d file %q", tt.name, inv.Config.SocksAddr.Port(), inv.Config.ConfigFile)
		}
	}

	// Missing default file: the defaults and a warning.
	inv := mustParse(t, []string{"true"}, envOf(), filesOf())
	if inv.Config.ConfigFile != "" || !reflect.DeepEqual(inv.Config.Warnings, []string{"config file " + F + " not found: using the defaults"}) {
		t.Errorf("missing default file: %q %q", inv.Config.ConfigFile, inv.Config.Warnings)
	}
	// A file named explicitly must exist.
	err := parseErr(t, []string{"true"}, envOf("TORSOCKS_CONF_FILE=/nope.conf"), filesOf())
	if want := "config file /nope.conf (from TORSOCKS_CONF_FILE): file does not exist"; err.Error() != want {
		t.Errorf("got %q", err)
	}
	err = parseErr(t, []string{"--config=/nope.conf", "true"}, envOf(), filesOf())
	if want := "config file /nope.conf (from --config): file does not exist"; err.Error() != want {
		t.Errorf("got %q", err)
	}
	// An unreadable default file is an error, not silently the defaults.
	denied := func(name string) ([]byte, error) {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrPermission}
	}
	err = parseErr(t, []string{"true"}, envOf(), denied)
	if want := "config file " + F + ": permission denied"; err.Error() != want {
		t.Errorf("got %q", err)
	}
}
