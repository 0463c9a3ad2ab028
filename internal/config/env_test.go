package config

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// Every variable, a good value.
func TestEnvVars(t *testing.T) {
	tests := []struct {
		env   string
		check func(c *Config) bool
	}{
		{"TORSOCKS_LOG_LEVEL=1", func(c *Config) bool { return c.LogLevel == 1 }},
		{"TORSOCKS_LOG_LEVEL=2", func(c *Config) bool { return c.LogLevel == 2 }},
		{"TORSOCKS_LOG_LEVEL=4", func(c *Config) bool { return c.LogLevel == 4 }},
		{"TORSOCKS_LOG_LEVEL=5", func(c *Config) bool { return c.LogLevel == 5 }},
		{"TORSOCKS_LOG_TIME=0", func(c *Config) bool { return !c.LogTime }},
		{"TORSOCKS_LOG_TIME=1", func(c *Config) bool { return c.LogTime }},
		{"TORSOCKS_LOG_FILE_PATH=/tmp/ts.log", func(c *Config) bool { return c.LogFile == "/tmp/ts.log" }},
		{"TORSOCKS_LOG_FILE_PATH=", func(c *Config) bool { return c.LogFile == "" }},
		{"TORSOCKS_TOR_ADDRESS=10.0.0.1", func(c *Config) bool { return c.SocksAddr == netip.MustParseAddrPort("10.0.0.1:9050") }},
		{"TORSOCKS_TOR_ADDRESS=unix:/run/tor/socks", func(c *Config) bool { return c.SocksUnix == "/run/tor/socks" }},
		{"TORSOCKS_TOR_PORT=9150", func(c *Config) bool { return c.SocksAddr.Port() == 9150 }},
		{"TORSOCKS_ALLOW_INBOUND=1", func(c *Config) bool { return c.AllowInbound }},
		{"TORSOCKS_ISOLATE_PID=1", func(c *Config) bool { return c.IsolatePID }},
		{"TORSOCKS_KEEP_CAPABILITIES=1", func(c *Config) bool { return c.KeepCapabilities }},
		{"TORSOCKS_ENABLE_IPV6=0", func(c *Config) bool { return !c.EnableIPv6 }},
		{"TORSOCKS_CONNECT_TIMEOUT=7", func(c *Config) bool { return c.ConnectTimeout == 7*time.Second }},
		{"TORSOCKS_DNS_MODE=resolve", func(c *Config) bool { return c.DNSMode == DNSResolve }},
		{"TORSOCKS_TOR_ADDRESS_IPV6=::1", func(c *Config) bool { return c.SocksAddrV6 == netip.MustParseAddrPort("[::1]:9050") }},
		{"TORSOCKS_ALLOW_OUTBOUND_LOCALHOST=2", func(c *Config) bool { return c.AllowOutboundLocalhost == 2 }},
		{"TORSOCKS_VET_RECEIVED_SOCKETS=1", func(c *Config) bool { return c.VetReceivedSockets }},
		{"TORSOCKS_VET_RECEIVED_SOCKETS=off", func(c *Config) bool { return !c.VetReceivedSockets }},
		{"TORSOCKS_SEALED_NETWORK=1", func(c *Config) bool { return c.SealedNetwork }},
		{"TORSOCKS_SEALED_NETWORK=no", func(c *Config) bool { return !c.SealedNetwork }},
		{"TORSOCKS_ASYNC_CONNECT=0", func(c *Config) bool { return !c.AsyncConnect }},
		{"TORSOCKS_ASYNC_CONNECT=1", func(c *Config) bool { return c.AsyncConnect }},
		{"TORSOCKS_TOR_START=never", func(c *Config) bool { return c.TorStart == TorStartNever }},
		{"TORSOCKS_TOR_START=always", func(c *Config) bool { return c.TorStart == TorStartAlways && !c.SocksExplicit }},
		{"TORSOCKS_TOR_CONFIG=/etc/x.torrc", func(c *Config) bool { return c.TorConfig == "/etc/x.torrc" }},
		{"TORSOCKS_TOR_BINARY=/opt/tor", func(c *Config) bool { return c.TorBinary == "/opt/tor" }},
		{"TORSOCKS_TOR_BOOTSTRAP_TIMEOUT=30", func(c *Config) bool { return c.TorBootstrapTimeout == 30*time.Second }},
		{"TORSOCKS_TOR_IDLE_TIME=1m", func(c *Config) bool { return c.TorIdleTime == time.Minute }},
		{"TORSOCKS_TOR_PORT=9050", func(c *Config) bool { return c.SocksExplicit && c.Sources["TorPort"] == "TORSOCKS_TOR_PORT" }},
	}
	for _, tt := range tests {
		inv := mustParse(t, []string{"true"}, envOf(tt.env), conf(""))
		if !tt.check(&inv.Config) {
			t.Errorf("%s: %s", tt.env, inv.Config.String())
		}
	}
	inv := mustParse(t, []string{"true"}, envOf("TORSOCKS_USERNAME=u", "TORSOCKS_PASSWORD=p"), conf(""))
	if a := inv.Config.Auth; a == nil || *a != (Auth{"u", "p"}) {
		t.Errorf("TORSOCKS_USERNAME/PASSWORD: %v", a)
	}
	// As in torsocks, one half may come from the file and the other from the environment.
	inv = mustParse(t, []string{"true"}, envOf("TORSOCKS_PASSWORD=p"), conf("SOCKS5Username u"))
	if a := inv.Config.Auth; a == nil || *a != (Auth{"u", "p"}) {
		t.Errorf("file username + env password: %v", a)
	}
}

// Every variable, a bad value: an error naming the variable and the value.
func TestEnvErrors(t *testing.T) {
	tests := []struct{ env, want string }{
		{"TORSOCKS_LOG_LEVEL=6", "TORSOCKS_LOG_LEVEL: 6 is not a log level (1 none, 2 error, 3 warning, 4 notice, 5 debug)"},
		{"TORSOCKS_LOG_LEVEL=debug", "TORSOCKS_LOG_LEVEL: debug is not a log level (1 none, 2 error, 3 warning, 4 notice, 5 debug)"},
		{"TORSOCKS_LOG_TIME=2", "TORSOCKS_LOG_TIME: 2 is not a boolean (0/1, no/yes, false/true, off/on)"},
		{"TORSOCKS_LOG_FILE_PATH=a\x00b", `TORSOCKS_LOG_FILE_PATH: "a\x00b" contains a NUL byte`},
		{"TORSOCKS_USERNAME=" + strings.Repeat("u", 300), "TORSOCKS_USERNAME: the SOCKS5 username is 300 bytes long, at most 255 fit in a SOCKS5 request"},
		{"TORSOCKS_PASSWORD=" + strings.Repeat("p", 300), "TORSOCKS_PASSWORD: the SOCKS5 password is 300 bytes long, at most 255 fit in a SOCKS5 request"},
		{"TORSOCKS_TOR_ADDRESS=localhost", "TORSOCKS_TOR_ADDRESS: localhost is not a numeric IPv4 or IPv6 address nor a unix socket path (host names are refused: resolving one would happen outside Tor)"},
		{"TORSOCKS_TOR_PORT=65536", "TORSOCKS_TOR_PORT: 65536 is not a port (1-65535)"},
		{"TORSOCKS_ALLOW_INBOUND=x", "TORSOCKS_ALLOW_INBOUND: x is not a boolean (0/1, no/yes, false/true, off/on)"},
		{"TORSOCKS_ISOLATE_PID=3", "TORSOCKS_ISOLATE_PID: 3 is not a boolean (0/1, no/yes, false/true, off/on)"},
		{"TORSOCKS_ENABLE_IPV6=maybe", "TORSOCKS_ENABLE_IPV6: maybe is not a boolean (0/1, no/yes, false/true, off/on)"},
		{"TORSOCKS_CONNECT_TIMEOUT=soon", "TORSOCKS_CONNECT_TIMEOUT: soon is not a number of seconds nor a duration like 90s or 2m"},
		{"TORSOCKS_DNS_MODE=x", "TORSOCKS_DNS_MODE: x is not a DNS mode (map or resolve)"},
		{"TORSOCKS_TOR_ADDRESS_IPV6=x", "TORSOCKS_TOR_ADDRESS_IPV6: x is not an IPv6 address or [address]:port"},
		{"TORSOCKS_ALLOW_OUTBOUND_LOCALHOST=9", "TORSOCKS_ALLOW_OUTBOUND_LOCALHOST: 9 is not 0 (refuse), 1 (TCP direct) or 2 (TCP and UDP direct)"},
		{"TORSOCKS_USERNAME=u", "a SOCKS5 username (from TORSOCKS_USERNAME) needs a password too: set SOCKS5Password, TORSOCKS_PASSWORD or -p"},
	}
	for _, tt := range tests {
		err := parseErr(t, []string{"true"}, envOf(tt.env), conf(""))
		if err.Error() != tt.want {
			t.Errorf("%q:\n got %q\nwant %q", tt.env, err, tt.want)
		}
	}
	err := parseErr(t, []string{"true"}, envOf("TORSOCKS_ISOLATE_PID=1"), conf("SOCKS5Username u\nSOCKS5Password p"))
	if want := "IsolatePID (from TORSOCKS_ISOLATE_PID) and SOCKS5 credentials (from " + F + ":1) exclude each other: isolation makes its own credentials; drop one of them"; err.Error() != want {
		t.Errorf("got %q", err)
	}
}

// Every overridable setting at each precedence step: default < file < environment < flag.
func TestPrecedence(t *testing.T) {
	type layer struct {
		file, env string
		flag      []string
	}
	tests := []struct {
		name string
		get  func(c *Config) string
		def  string
		file string // line for the file
		env  string // NAME=value
		flag []string
		// wantFile, wantEnv, wantFlag: the value once each layer is added.
		wantFile, wantEnv, wantFlag string
	}{
		{name: "TorAddress", get: func(c *Config) string { return c.SocksAddr.Addr().String() }, def: "127.0.0.1",
			file: "TorAddress 10.0.0.1", env: "TORSOCKS_TOR_ADDRESS=10.0.0.2", flag: []string{"-a", "10.0.0.3"},
			wantFile: "10.0.0.1", wantEnv: "10.0.0.2", wantFlag: "10.0.0.3"},
		{name: "TorPort", get: func(c *Config) string { return fmt.Sprint(c.SocksAddr.Port()) }, def: "9050",
			file: "TorPort 1", env: "TORSOCKS_TOR_PORT=2", flag: []string{"-P", "3"},
			wantFile: "1", wantEnv: "2", wantFlag: "3"},
		{name: "TorAddressIPv6", get: func(c *Config) string { return c.SocksAddrV6.String() }, def: "invalid AddrPort",
			file: "TorAddressIPv6 [::1]:1", env: "TORSOCKS_TOR_ADDRESS_IPV6=[::1]:2", flag: []string{"--tor-address-ipv6", "[::1]:3"},
			wantFile: "[::1]:1", wantEnv: "[::1]:2", wantFlag: "[::1]:3"},
		{name: "SOCKS5Username", get: func(c *Config) string { return authOf(c, true) }, def: "",
			file: "SOCKS5Username f\nSOCKS5Password x", env: "TORSOCKS_USERNAME=e", flag: []string{"-u", "c"},
			wantFile: "f", wantEnv: "e", wantFlag: "c"},
		{name: "SOCKS5Password", get: func(c *Config) string { return authOf(c, false) }, def: "",
			file: "SOCKS5Password f\nSOCKS5Username x", env: "TORSOCKS_PASSWORD=e", flag: []string{"-p", "c"},
			wantFile: "f", wantEnv: "e", wantFlag: "c"},
		{name: "IsolatePID", get: func(c *Config) string { return fmt.Sprint(c.IsolatePID) }, def: "false",
			file: "IsolatePID 1", env: "TORSOCKS_ISOLATE_PID=0", flag: []string{"-i"},
			wantFile: "true", wantEnv: "false", wantFlag: "true"},
		{name: "KeepCapabilities", get: func(c *Config) string { return fmt.Sprint(c.KeepCapabilities) }, def: "false",
			file: "KeepCapabilities 1", env: "TORSOCKS_KEEP_CAPABILITIES=0", flag: []string{"--keep-capabilities"},
			wantFile: "true", wantEnv: "false", wantFlag: "true"},
		{name: "EnableIPv6", get: func(c *Config) string { return fmt.Sprint(c.EnableIPv6) }, def: "true",
			file: "EnableIPv6 1", env: "TORSOCKS_ENABLE_IPV6=0", flag: []string{"-6"},
			wantFile: "true", wantEnv: "false", wantFlag: "true"},
		{name: "EnableIPv6 off in file", get: func(c *Config) string { return fmt.Sprint(c.EnableIPv6) }, def: "true",
			file: "EnableIPv6 0", env: "TORSOCKS_ENABLE_IPV6=1", flag: []string{"--ipv6"},
			wantFile: "false", wantEnv: "true", wantFlag: "true"},
		{name: "ConnectTimeout", get: func(c *Config) string { return c.ConnectTimeout.String() }, def: "2m0s",
			file: "ConnectTimeout 1", env: "TORSOCKS_CONNECT_TIMEOUT=2", flag: []string{"--connect-timeout", "3"},
			wantFile: "1s", wantEnv: "2s", wantFlag: "3s"},
		{name: "DNSMode", get: func(c *Config) string { return c.DNSMode }, def: "map",
			file: "DNSMode resolve", env: "TORSOCKS_DNS_MODE=map", flag: []string{"--dns", "resolve"},
			wantFile: "resolve", wantEnv: "map", wantFlag: "resolve"},
		{name: "TorStart", get: func(c *Config) string { return c.TorStart }, def: "auto",
			file: "TorStart never", env: "TORSOCKS_TOR_START=always", flag: []string{"--tor-start", "auto"},
			wantFile: "never", wantEnv: "always", wantFlag: "auto"},
		{name: "TorConfig", get: func(c *Config) string { return c.TorConfig }, def: "",
			file: "TorConfig /a", env: "TORSOCKS_TOR_CONFIG=/b", flag: []string{"--tor-config", "/c"},
			wantFile: "/a", wantEnv: "/b", wantFlag: "/c"},
		{name: "TorBinary", get: func(c *Config) string { return c.TorBinary }, def: "tor",
			file: "TorBinary /a", env: "TORSOCKS_TOR_BINARY=/b", flag: []string{"--tor-binary", "/c"},
			wantFile: "/a", wantEnv: "/b", wantFlag: "/c"},
		{name: "TorBootstrapTimeout", get: func(c *Config) string { return c.TorBootstrapTimeout.String() }, def: "2m0s",
			file: "TorBootstrapTimeout 1", env: "TORSOCKS_TOR_BOOTSTRAP_TIMEOUT=2", flag: []string{"--tor-bootstrap-timeout", "3"},
			wantFile: "1s", wantEnv: "2s", wantFlag: "3s"},
		{name: "TorIdleTime", get: func(c *Config) string { return c.TorIdleTime.String() }, def: "5m0s",
			file: "TorIdleTime 10", env: "TORSOCKS_TOR_IDLE_TIME=20",
			wantFile: "10s", wantEnv: "20s", wantFlag: "20s"},
		{name: "SocksExplicit", get: func(c *Config) string { return fmt.Sprint(c.SocksExplicit) }, def: "false",
			file: "TorStart auto", env: "TORSOCKS_TOR_ADDRESS=127.0.0.1", flag: []string{"-P", "9050"},
			wantFile: "false", wantEnv: "true", wantFlag: "true"},
		{name: "LogLevel -d", get: func(c *Config) string { return fmt.Sprint(c.LogLevel) }, def: "3",
			env: "TORSOCKS_LOG_LEVEL=1", flag: []string{"-d"},
			wantFile: "3", wantEnv: "1", wantFlag: "5"},
		{name: "LogLevel -q", get: func(c *Config) string { return fmt.Sprint(c.LogLevel) }, def: "3",
			env: "TORSOCKS_LOG_LEVEL=5", flag: []string{"-q"},
			wantFile: "3", wantEnv: "5", wantFlag: "1"},
		{name: "OnionAddrRange", get: func(c *Config) string { return c.OnionAddrRange.String() }, def: "127.42.42.0/24",
			file:     "OnionAddrRange 10.40.0.0/16",
			wantFile: "10.40.0.0/16", wantEnv: "10.40.0.0/16", wantFlag: "10.40.0.0/16"},
		{name: "AllowInbound", get: func(c *Config) string { return fmt.Sprint(c.AllowInbound) }, def: "false",
			file: "AllowInbound 1", env: "TORSOCKS_ALLOW_INBOUND=0",
			wantFile: "true", wantEnv: "false", wantFlag: "false"},
		{name: "AllowOutboundLocalhost", get: func(c *Config) string { return fmt.Sprint(c.AllowOutboundLocalhost) }, def: "0",
			file: "AllowOutboundLocalhost 2", env: "TORSOCKS_ALLOW_OUTBOUND_LOCALHOST=1",
			wantFile: "2", wantEnv: "1", wantFlag: "1"},
		{name: "VetReceivedSockets", get: func(c *Config) string { return fmt.Sprint(c.VetReceivedSockets) }, def: fmt.Sprint(DefaultVetReceivedSockets),
			file: "VetReceivedSockets 1", env: "TORSOCKS_VET_RECEIVED_SOCKETS=0",
			wantFile: "true", wantEnv: "false", wantFlag: "false"},
		{name: "VetReceivedSockets off in file", get: func(c *Config) string { return fmt.Sprint(c.VetReceivedSockets) }, def: fmt.Sprint(DefaultVetReceivedSockets),
			file: "VetReceivedSockets off", env: "TORSOCKS_VET_RECEIVED_SOCKETS=yes",
			wantFile: "false", wantEnv: "true", wantFlag: "true"},
		{name: "SealedNetwork", get: func(c *Config) string { return fmt.Sprint(c.SealedNetwork) }, def: fmt.Sprint(DefaultSealedNetwork),
			file: "SealedNetwork 1", env: "TORSOCKS_SEALED_NETWORK=0",
			wantFile: "true", wantEnv: "false", wantFlag: "false"},
		{name: "SealedNetwork off in file", get: func(c *Config) string { return fmt.Sprint(c.SealedNetwork) }, def: fmt.Sprint(DefaultSealedNetwork),
			file: "SealedNetwork off", env: "TORSOCKS_SEALED_NETWORK=yes",
			wantFile: "false", wantEnv: "true", wantFlag: "true"},
		{name: "LogTime", get: func(c *Config) string { return fmt.Sprint(c.LogTime) }, def: "true",
			env: "TORSOCKS_LOG_TIME=0", wantFile: "true", wantEnv: "false", wantFlag: "false"},
		{name: "LogFile", get: func(c *Config) string { return c.LogFile }, def: "",
			env: "TORSOCKS_LOG_FILE_PATH=/l", wantFile: "", wantEnv: "/l", wantFlag: "/l"},
	}
	for _, tt := range tests {
		steps := []struct {
			step  string
			layer layer
			want  string
		}{
			{"default", layer{}, tt.def},
			{"file", layer{file: tt.file}, tt.wantFile},
			{"file+env", layer{file: tt.file, env: tt.env}, tt.wantEnv},
			{"file+env+flag", layer{file: tt.file, env: tt.env, flag: tt.flag}, tt.wantFlag},
		}
		for _, st := range steps {
			var env []string
			if st.layer.env != "" {
				env = append(env, st.layer.env)
			}
			// The credentials' other half comes with the file line, so both are always set.
			args := append(append([]string{}, st.layer.flag...), "true")
			inv := mustParse(t, args, envOf(env...), conf(st.layer.file))
			if got := tt.get(&inv.Config); got != st.want {
				t.Errorf("%s, %s: got %q, want %q", tt.name, st.step, got, st.want)
			}
		}
	}
}

// An explicit SocksPort, whichever layer gives it and even when it names the default, never
// makes torsocks start a tor; with TorStart always it is an error naming both sources.
func TestSocksExplicit(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		env      []string
		file     string
		explicit bool
	}{
		{"defaults", nil, nil, "", false},
		{"Debian's stock file", nil, nil, "TorAddress 127.0.0.1\nTorPort 9050\nOnionAddrRange 127.42.42.0/24", false},
		{"file TorAddress", nil, nil, "TorAddress 127.0.0.2", true},
		{"file TorAddress unix", nil, nil, "TorAddress /run/tor/socks", true},
		{"file TorPort", nil, nil, "TorPort 9150", true},
		{"env default port", nil, []string{"TORSOCKS_TOR_PORT=9050"}, "", true},
		{"file TorAddressIPv6", nil, nil, "TorAddressIPv6 ::1", true},
		{"env unix", nil, []string{"TORSOCKS_TOR_ADDRESS=/run/tor/socks"}, "", true},
		{"-a", []string{"-a", "127.0.0.1"}, nil, "", true},
		{"-P", []string{"-P", "9050"}, nil, "", true},
		{"other keys", []string{"--dns", "resolve"}, []string{"TORSOCKS_TOR_START=never"}, "IsolatePID 1", false},
	}
	for _, tt := range tests {
		inv := mustParse(t, append(tt.args, "true"), envOf(tt.env...), conf(tt.file))
		if inv.Config.SocksExplicit != tt.explicit {
			t.Errorf("%s: SocksExplicit %v, want %v", tt.name, inv.Config.SocksExplicit, tt.explicit)
		}
	}
	err := parseErr(t, []string{"--tor-start", "always", "true"}, envOf(), conf("TorPort 9150"))
	if want := "TorStart always (from --tor-start) and an explicit SocksPort (from " + F + ":1) exclude each other: " +
		"torsocks starts its own tor only where no SocksPort is configured; drop one of them"; err.Error() != want {
		t.Errorf("got %q", err)
	}
}

func authOf(c *Config, user bool) string {
	switch {
	case c.Auth == nil:
		return ""
	case user:
		return c.Auth.Username
	}
	return c.Auth.Password
}

func TestDescribe(t *testing.T) {
	inv := mustParse(t, []string{"-u", "alice", "-P", "9150", "true"},
		envOf("TORSOCKS_PASSWORD=hunter2"), conf("TorAddress 127.0.0.2\n"))
	s := inv.Config.String()
	for _, want := range []string{
		"config file " + F, "TorAddress 127.0.0.2 (" + F + ":1)", "TorPort 9150 (-P)",
		"SOCKS5Username alice", "SOCKS5Password (hidden)", "EnableIPv6 1 (default)", "VetReceivedSockets 0 (default)", "SealedNetwork 1 (default)", "LogFile stderr",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("Describe lacks %q: %s", want, s)
		}
	}
	if strings.Contains(s, "hunter2") {
		t.Errorf("Describe shows the password: %s", s)
	}
	for _, l := range inv.Config.Describe() {
		if strings.Contains(l, "\n") {
			t.Errorf("line %q", l)
		}
	}
}
