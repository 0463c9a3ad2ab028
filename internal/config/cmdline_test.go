package config

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestFlags(t *testing.T) {
	v6 := netip.MustParseAddr("::1")
	tests := []struct {
		name    string
		args    []string
		env     []string
		action  Action
		command []string
		shell   bool
		check   func(c *Config) bool
	}{
		{name: "plain command", args: []string{"curl", "-d", "x"}, command: []string{"curl", "-d", "x"},
			check: func(c *Config) bool { return c.LogLevel == LogWarning }},
		{name: "-h", args: []string{"-h"}, action: Help},
		{name: "--help", args: []string{"--help"}, action: Help},
		{name: "--help ignores the rest", args: []string{"--help", "--bogus", "x"}, action: Help},
		{name: "--version", args: []string{"--version"}, action: Version},
		{name: "-d", args: []string{"-d", "true"}, command: []string{"true"},
			check: func(c *Config) bool { return c.LogLevel == LogDebug }},
		{name: "--debug", args: []string{"--debug", "true"}, command: []string{"true"},
			check: func(c *Config) bool { return c.LogLevel == LogDebug }},
		{name: "-q", args: []string{"-q", "true"}, command: []string{"true"},
			check: func(c *Config) bool { return c.LogLevel == LogNone }},
		{name: "--quiet", args: []string{"--quiet", "true"}, command: []string{"true"},
			check: func(c *Config) bool { return c.LogLevel == LogNone }},
		{name: "-d then -q: last wins", args: []string{"-d", "-q", "true"}, command: []string{"true"},
			check: func(c *Config) bool { return c.LogLevel == LogNone }},
		{name: "-u -p", args: []string{"-u", "alice", "-p", "secret", "true"}, command: []string{"true"},
			check: func(c *Config) bool { return *c.Auth == Auth{"alice", "secret"} }},
		{name: "--user --pass", args: []string{"--user", "alice", "--pass", "secret", "true"}, command: []string{"true"},
			check: func(c *Config) bool { return *c.Auth == Auth{"alice", "secret"} }},
		{name: "--user= --pass=", args: []string{"--user=alice", "--pass=se=cret", "true"}, command: []string{"true"},
			check: func(c *Config) bool { return *c.Auth == Auth{"alice", "se=cret"} }},
		{name: "-uNAME -pPASS", args: []string{"-ualice", "-psecret", "true"}, command: []string{"true"},
			check: func(c *Config) bool { return *c.Auth == Auth{"alice", "secret"} }},
		{name: "-a", args: []string{"-a", "10.0.0.1", "true"}, command: []string{"true"},
			check: func(c *Config) bool { return c.SocksAddr == netip.MustParseAddrPort("10.0.0.1:9050") }},
		{name: "--address IPv6", args: []string{"--address", "::1", "true"}, command: []string{"true"},
			check: func(c *Config) bool { return c.SocksAddr == netip.AddrPortFrom(v6, 9050) }},
		{name: "--address unix", args: []string{"--address=unix:/run/tor/socks", "true"}, command: []string{"true"},
			check: func(c *Config) bool { return c.SocksUnix == "/run/tor/socks" && !c.SocksAddr.IsValid() }},
		{name: "-P", args: []string{"-P", "9150", "true"}, command: []string{"true"},
			check: func(c *Config) bool { return c.SocksAddr.Port() == 9150 }},
		{name: "--port", args: []string{"--port", "9150", "true"}, command: []string{"true"},
			check: func(c *Config) bool { return c.SocksAddr.Port() == 9150 }},
		{name: "-i", args: []string{"-i", "true"}, command: []string{"true"},
			check: func(c *Config) bool { return c.IsolatePID && c.Auth == nil }},
		{name: "--isolate", args: []string{"--isolate", "true"}, command: []string{"true"},
			check: func(c *Config) bool { return c.IsolatePID }},
		{name: "-6", args: []string{"-6", "true"}, env: []string{"TORSOCKS_ENABLE_IPV6=0"}, command: []string{"true"},
			check: func(c *Config) bool { return c.EnableIPv6 }},
		{name: "--ipv6", args: []string{"--ipv6", "true"}, env: []string{"TORSOCKS_ENABLE_IPV6=0"}, command: []string{"true"},
			check: func(c *Config) bool { return c.EnableIPv6 }},
		{name: "grouped -di6", args: []string{"-di6", "true"}, command: []string{"true"},
			check: func(c *Config) bool { return c.LogLevel == LogDebug && c.IsolatePID && c.EnableIPv6 }},
		{name: "grouped -dP9150", args: []string{"-dP9150", "true"}, command: []string{"true"},
			check: func(c *Config) bool { return c.LogLevel == LogDebug && c.SocksAddr.Port() == 9150 }},
		{name: "--shell", args: []string{"--shell"}, env: []string{"SHELL=/bin/zsh"}, command: []string{"/bin/zsh"}, shell: true},
		{name: "--shell without SHELL", args: []string{"-d", "--shell"}, command: []string{"/bin/sh"}, shell: true,
			check: func(c *Config) bool { return c.LogLevel == LogDebug }},
		{name: "--shell with empty SHELL", args: []string{"--shell"}, env: []string{"SHELL="}, command: []string{"/bin/sh"}, shell: true},
		{name: "on", args: []string{"on"}, action: OnOffShow, command: []string{"on"}},
		{name: "off", args: []string{"-d", "off"}, action: OnOffShow, command: []string{"off"}},
		{name: "show", args: []string{"show", "x"}, action: OnOffShow, command: []string{"show"}},
		{name: "sh is a command here", args: []string{"sh", "-c", "true"}, command: []string{"sh", "-c", "true"}},
		{name: "-- then on is a command", args: []string{"--", "on"}, command: []string{"on"}},
		{name: "-- ends options", args: []string{"-d", "--", "-q", "x"}, command: []string{"-q", "x"},
			check: func(c *Config) bool { return c.LogLevel == LogDebug }},
		{name: "options only before the command", args: []string{"ls", "-d"}, command: []string{"ls", "-d"},
			check: func(c *Config) bool { return c.LogLevel == LogWarning }},
		{name: "- is a command word", args: []string{"-"}, command: []string{"-"}},
		{name: "--config", args: []string{"--config", "/x.conf", "true"}, command: []string{"true"},
			check: func(c *Config) bool { return c.ConfigFile == "/x.conf" && c.SocksAddr.Port() == 9999 }},
		{name: "--connect-timeout", args: []string{"--connect-timeout", "30", "true"}, command: []string{"true"},
			check: func(c *Config) bool { return c.ConnectTimeout == 30*time.Second }},
		{name: "--connect-timeout=1.5", args: []string{"--connect-timeout=1.5", "true"}, command: []string{"true"},
			check: func(c *Config) bool { return c.ConnectTimeout == 1500*time.Millisecond }},
		{name: "--dns", args: []string{"--dns", "resolve", "true"}, command: []string{"true"},
			check: func(c *Config) bool { return c.DNSMode == DNSResolve }},
		{name: "--tor-start", args: []string{"--tor-start", "never", "true"}, command: []string{"true"},
			check: func(c *Config) bool { return c.TorStart == TorStartNever && c.Sources["TorStart"] == "--tor-start" }},
		{name: "--tor-config=", args: []string{"--tor-config=/j.torrc", "true"}, command: []string{"true"},
			check: func(c *Config) bool { return c.TorConfig == "/j.torrc" }},
		{name: "--tor-binary", args: []string{"--tor-binary", "/opt/tor", "true"}, command: []string{"true"},
			check: func(c *Config) bool { return c.TorBinary == "/opt/tor" }},
		{name: "--tor-bootstrap-timeout", args: []string{"--tor-bootstrap-timeout", "2m", "true"}, command: []string{"true"},
			check: func(c *Config) bool { return c.TorBootstrapTimeout == 2*time.Minute }},
		{name: "--tor-stop", args: []string{"--tor-stop"}, action: TorStop},
		{name: "--doctor", args: []string{"--tor-start", "never", "--doctor"}, action: Doctor,
			check: func(c *Config) bool { return c.TorStart == TorStartNever }},
		{name: "--tor-address-ipv6", args: []string{"--tor-address-ipv6", "::1", "-P", "9150", "true"}, command: []string{"true"},
			check: func(c *Config) bool { return c.SocksAddrV6 == netip.AddrPortFrom(v6, 9150) }},
		{name: "--tor-address-ipv6 with port", args: []string{"--tor-address-ipv6=[::1]:9051", "true"}, command: []string{"true"},
			check: func(c *Config) bool { return c.SocksAddrV6 == netip.AddrPortFrom(v6, 9051) }},
	}
	files := filesOf("/x.conf", "TorPort 9999\n")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inv := mustParse(t, tt.args, envOf(tt.env...), files)
			if inv.Action != tt.action {
				t.Errorf("Action = %v, want %v", inv.Action, tt.action)
			}
			if !reflect.DeepEqual(inv.Command, tt.command) {
				t.Errorf("Command = %q, want %q", inv.Command, tt.command)
			}
			if inv.Shell != tt.shell {
				t.Errorf("Shell = %v, want %v", inv.Shell, tt.shell)
			}
			if tt.check != nil && !tt.check(&inv.Config) {
				t.Errorf("config not as expected: %s", inv.Config.String())
			}
		})
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args      []string
		want      string
		showUsage bool
	}{
		{nil, "no command given: torsocks [OPTIONS] COMMAND [ARG...]", true},
		{[]string{"-d"}, "no command given: torsocks [OPTIONS] COMMAND [ARG...]", false},
		{[]string{"--"}, "no command given: torsocks [OPTIONS] COMMAND [ARG...]", false},
		{[]string{"-x", "true"}, "unknown option -x", false},
		{[]string{"-dx", "true"}, "unknown option -x", false},
		{[]string{"--bogus", "true"}, "unknown option --bogus", false},
		{[]string{"--hel", "true"}, "unknown option --hel", false},
		{[]string{"--debug=1", "true"}, "option --debug takes no value", false},
		{[]string{"-u"}, "option -u needs a value (NAME)", false},
		{[]string{"--user"}, "option --user needs a value (NAME)", false},
		{[]string{"-u", "", "true"}, "option -u needs a non-empty value (NAME)", false},
		{[]string{"--user=", "true"}, "option --user needs a non-empty value (NAME)", false},
		{[]string{"-p"}, "option -p needs a value (PASS)", false},
		{[]string{"-a"}, "option -a needs a value (ADDR)", false},
		{[]string{"-P"}, "option -P needs a value (PORT)", false},
		{[]string{"--config"}, "option --config needs a value (FILE)", false},
		{[]string{"--shell", "bash"}, "--shell takes no command (got bash)", false},
	}
	for _, tt := range tests {
		err := parseErr(t, tt.args, envOf(), conf(""))
		var ue *UsageError
		if !errors.As(err, &ue) || !errors.Is(err, ErrUsage) {
			t.Errorf("Parse(%q) error %v is not a usage error", tt.args, err)
			continue
		}
		if ue.Msg != tt.want || ue.ShowUsage != tt.showUsage || ue.ExitStatus() != 1 {
			t.Errorf("Parse(%q) = %q (show usage %v), want %q (%v)", tt.args, ue.Msg, ue.ShowUsage, tt.want, tt.showUsage)
		}
	}
}

func TestFlagValueErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"-P", "70000", "true"}, "-P: 70000 is not a port (1-65535)"},
		{[]string{"--port=0", "true"}, "--port: 0 is not a port (1-65535)"},
		{[]string{"-a", "localhost", "true"}, "-a: localhost is not a numeric IPv4 or IPv6 address nor a unix socket path (host names are refused: resolving one would happen outside Tor)"},
		{[]string{"--address", "unix:run/tor", "true"}, "--address: unix:run/tor: the unix socket path must be absolute"},
		{[]string{"--tor-start", "on", "true"}, "--tor-start: on is not a TorStart mode (auto, never or always)"},
		{[]string{"--tor-bootstrap-timeout", "0", "true"}, "--tor-bootstrap-timeout: 0 is not a positive time (waiting for Tor to bootstrap must time out)"},
		{[]string{"--connect-timeout", "0", "true"}, "--connect-timeout: 0 is not a positive time (a connection to Tor must time out)"},
		{[]string{"--dns", "DNS", "true"}, "--dns: DNS is not a DNS mode (map or resolve)"},
		{[]string{"--tor-address-ipv6", "127.0.0.1", "true"}, "--tor-address-ipv6: 127.0.0.1 is not an IPv6 address"},
		{[]string{"-u", strings.Repeat("u", 256), "-p", "x", "true"}, "-u: the SOCKS5 username is 256 bytes long, at most 255 fit in a SOCKS5 request"},
		{[]string{"-u", "a", "true"}, "a SOCKS5 username (from -u) needs a password too: set SOCKS5Password, TORSOCKS_PASSWORD or -p"},
		{[]string{"-p", "a", "true"}, "a SOCKS5 password (from -p) needs a username too: set SOCKS5Username, TORSOCKS_USERNAME or -u"},
		{[]string{"-i", "-u", "a", "-p", "b", "true"}, "IsolatePID (from -i) and SOCKS5 credentials (from -u) exclude each other: isolation makes its own credentials; drop one of them"},
	}
	for _, tt := range tests {
		err := parseErr(t, tt.args, envOf(), conf(""))
		if err.Error() != tt.want {
			t.Errorf("Parse(%q) = %q\nwant %q", tt.args, err, tt.want)
		}
		if errors.Is(err, ErrUsage) {
			t.Errorf("Parse(%q): a bad value is not a usage error", tt.args)
		}
	}
}

// Help, version and on/off/show do not read the environment nor the config file (as torsocks).
func TestNonRunActionsReadNothing(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"--version"}, {"on"}, {"--tor-stop"}} {
		inv := mustParse(t, args, envOf("TORSOCKS_TOR_PORT=bad"), conf("TorPort bad\n"))
		if inv.Config.SocksAddr.Port() != DefaultTorPort {
			t.Errorf("%q: config %v", args, inv.Config.String())
		}
	}
}

func TestUsageText(t *testing.T) {
	u := Usage()
	for _, o := range options {
		if !strings.Contains(u, "--"+o.long) {
			t.Errorf("usage lacks --%s", o.long)
		}
	}
	ours := u[strings.Index(u, "Additions of this torsocks"):]
	for _, o := range options {
		if strings.Contains(ours, "--"+o.long+" ") != o.ours {
			t.Errorf("--%s listed in the wrong section", o.long)
		}
	}
	if !strings.Contains(OnOffShowMessage("on"), "--shell") || strings.Contains(OnOffShowMessage("on"), "\n") {
		t.Errorf("on/off/show message %q", OnOffShowMessage("on"))
	}
}
