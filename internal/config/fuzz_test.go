package config

import (
	"strconv"
	"strings"
	"testing"
)

func FuzzParseConfigFile(f *testing.F) {
	for _, seed := range []string{
		"", "\n", "TorAddress 127.0.0.1\nTorPort 9050\n", "TorPort 9051", "TorPort\n", "TorPort 1 2\n",
		"# c\nTorAddress unix:/run/tor/socks # c\n", "OnionAddrRange 127.42.42.0/24\r\n",
		"SOCKS5Username u\nSOCKS5Password p#w\n", "AllowInbound yes\nIsolatePID on\nEnableIPv6 off\n",
		"AllowOutboundLocalhost 2\nTorAddressIPv6 [::1]:9050\nConnectTimeout 1.5\nDNSMode resolve\n",
		"TorStart always\nTorConfig /x\nTorBinary tor\nTorBootstrapTimeout 2m\nTorIdleTime 1\n",
		"torport 1\nFoo bar\nTorPort 1\nTorPort 2\n", "\ufeffTorPort 9050", "TorAddress [fe80::1%eth0]\n",
		"ConnectTimeout 99999999999999999999999\n", "TorPort \x00\n", "\xff\xfe\n",
	} {
		f.Add(seed)
	}
	const name = "fuzz.conf"
	f.Fuzz(func(t *testing.T, text string) {
		s, warns, err := ParseConfigFile(name, []byte(text))
		lines := strings.Count(text, "\n") + 1
		checkWhere := func(kind, msg string) {
			rest, ok := strings.CutPrefix(msg, name+":")
			n, after, ok2 := strings.Cut(rest, ":")
			line, err := strconv.Atoi(n)
			if !ok || !ok2 || err != nil || line < 1 || line > lines || !strings.HasPrefix(after, " ") {
				t.Fatalf("%s %q does not start with %q:LINE:", kind, msg, name)
			}
			if strings.ContainsAny(msg, "\n\r") {
				t.Fatalf("%s %q is not one line", kind, msg)
			}
		}
		for _, w := range warns {
			checkWhere("warning", w)
		}
		if err != nil {
			checkWhere("error", err.Error())
			return
		}
		// What parsed must build (build's own checks are about pairs of settings only).
		d := defaults()
		d.mergeFrom(&s)
		if _, err := build(d); err != nil && !strings.Contains(err.Error(), "SOCKS5") {
			t.Fatalf("build: %v", err)
		}
	})
}

func FuzzParse(f *testing.F) {
	f.Add("-d\x00-u\x00a\x00-p\x00b\x00true", "TORSOCKS_TOR_PORT=9050", "TorPort 9051")
	f.Add("--shell", "SHELL=/bin/sh", "")
	f.Add("-dP9150\x00--dns=map\x00--\x00on", "TORSOCKS_LOG_LEVEL=5", "IsolatePID 1")
	f.Fuzz(func(t *testing.T, args, env, text string) {
		var a []string
		if args != "" {
			a = strings.Split(args, "\x00")
		}
		inv, err := Parse(a, envOf(strings.Split(env, "\x00")...), conf(text))
		if err != nil {
			if err.Error() == "" || strings.ContainsAny(err.Error(), "\n\r") {
				t.Fatalf("error %q", err)
			}
			return
		}
		c := inv.Config
		if inv.Action == Run && len(inv.Command) == 0 {
			t.Fatal("Run without a command")
		}
		if c.IsolatePID && c.Auth != nil {
			t.Fatal("IsolatePID with credentials")
		}
		if c.SocksAddr.IsValid() == (c.SocksUnix != "") {
			t.Fatalf("SocksAddr %v SocksUnix %q", c.SocksAddr, c.SocksUnix)
		}
		if c.LogLevel < LogNone || c.LogLevel > LogDebug || !c.OnionAddrRange.Addr().Is4() || c.ConnectTimeout <= 0 {
			t.Fatalf("config %s", c.String())
		}
	})
}
