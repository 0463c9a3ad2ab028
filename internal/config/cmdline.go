package config

import (
	"errors"
	"fmt"
	"strings"
)

// ErrUsage matches (errors.Is) every *UsageError.
var ErrUsage = errors.New("usage error")

// UsageError is a command line torsocks cannot make sense of. Like every error of Parse, it means
// exit status 1 (torsocks' status for usage errors).
type UsageError struct {
	Msg string
	// ShowUsage: print the whole usage text (torsocks does so when given no arguments at all).
	ShowUsage bool
}

func (e *UsageError) Error() string        { return e.Msg }
func (e *UsageError) Is(target error) bool { return target == ErrUsage }

// ExitStatus is the exit status torsocks uses for this error.
func (e *UsageError) ExitStatus() int { return 1 }

func usageErrorf(format string, args ...any) error {
	return &UsageError{Msg: fmt.Sprintf(format, args...)}
}

// Action is what the command line asks for.
type Action int

const (
	Run       Action = iota // run Invocation.Command under torsocks (also for --shell)
	Help                    // print Usage() on stdout, exit 0
	Version                 // print the version, exit 0
	OnOffShow               // torsocks' on/off/show: print OnOffShowMessage, exit 1
	TorStop                 // --tor-stop: stop the user's tor that torsocks started (internal/torstart)
	Doctor                  // --doctor: say what works on this machine for this user (internal/doctor)
)

func (a Action) String() string {
	switch a {
	case Run:
		return "run"
	case Help:
		return "help"
	case Version:
		return "version"
	case OnOffShow:
		return "on/off/show"
	case TorStop:
		return "tor-stop"
	case Doctor:
		return "doctor"
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// OnOffShowMessage is the one line printed for "torsocks on", "off" and "show".
func OnOffShowMessage(word string) string {
	return fmt.Sprintf("torsocks %s: not available: this torsocks does not use LD_PRELOAD, "+
		"so there is nothing to switch on in the current shell; use 'torsocks --shell' for a torified shell", word)
}

// option is one command-line option. Options of torsocks have a short and a long name; ours have a
// long name only, so that they can never clash with one torsocks adds later.
type option struct {
	short byte   // 0: none
	long  string // without "--"
	arg   string // name of the argument in the usage text; "" for a flag
	ours  bool   // an addition of this torsocks
	help  string
	// apply stores the option; value is "" for a flag. from is the option as typed.
	apply func(c *cmdline, value, from string) error
}

// cmdline is what the command line gave.
type cmdline struct {
	set        Settings
	configFile string // --config
	action     Action
	command    []string
	shell      bool
}

func flag(f func(c *cmdline, from string)) func(*cmdline, string, string) error {
	return func(c *cmdline, _, from string) error { f(c, from); return nil }
}

func value(set setter) func(*cmdline, string, string) error {
	return func(c *cmdline, v, from string) error { return set(&c.set, v, from) }
}

var options []option

func init() {
	options = []option{
		{short: 'h', long: "help", help: "Show this help",
			apply: flag(func(c *cmdline, _ string) { c.action = Help })},
		{long: "shell", help: "Spawn a torified shell ($SHELL, else /bin/sh)",
			apply: flag(func(c *cmdline, _ string) { c.shell = true })},
		{long: "version", help: "Show version",
			apply: flag(func(c *cmdline, _ string) { c.action = Version })},
		{short: 'd', long: "debug", help: "Set debug mode (log level 5)",
			apply: flag(func(c *cmdline, from string) { c.set.LogLevel.set(LogDebug, from) })},
		{short: 'q', long: "quiet", help: "Log nothing, not even errors (log level 1)",
			apply: flag(func(c *cmdline, from string) { c.set.LogLevel.set(LogNone, from) })},
		{short: 'u', long: "user", arg: "NAME", help: "Username for the SOCKS5 authentication",
			apply: value(setUsername)},
		{short: 'p', long: "pass", arg: "PASS", help: "Password for the SOCKS5 authentication",
			apply: value(setPassword)},
		{short: 'i', long: "isolate", help: "Automatic Tor isolation. Can't be used with -u/-p",
			apply: flag(func(c *cmdline, from string) { c.set.IsolatePID.set(true, from) })},
		{short: '6', long: "ipv6", help: "Allow IPv6 sockets (the default here; see EnableIPv6)",
			apply: flag(func(c *cmdline, from string) { c.set.EnableIPv6.set(true, from) })},
		{short: 'a', long: "address", arg: "ADDR", help: "Tor's SOCKS address: numeric IP or unix socket path",
			apply: value(setTorAddress)},
		{short: 'P', long: "port", arg: "PORT", help: "Tor's SOCKS port",
			apply: value(setTorPort)},

		{long: "config", arg: "FILE", ours: true, help: "Read FILE instead of $TORSOCKS_CONF_FILE or " + DefaultConfigFile,
			apply: func(c *cmdline, v, from string) error {
				p, err := parsePath(v)
				c.configFile = p
				return err
			}},
		{long: "connect-timeout", arg: "SECONDS", ours: true, help: "Give up a connection Tor has not made after SECONDS (default 120)",
			apply: value(setConnectTimeout)},
		{long: "dns", arg: "MODE", ours: true, help: "Name lookups: map (default) or resolve",
			apply: value(setDNSMode)},
		{long: "tor-address-ipv6", arg: "ADDR", ours: true, help: "Tor's IPv6 SOCKS address, for IPv6-only sockets ([ADDR]:PORT or ADDR)",
			apply: value(setTorAddressIPv6)},
		{long: "keep-capabilities", ours: true, help: "A root program keeps CAP_NET_ADMIN, CAP_SYS_ADMIN... (see KeepCapabilities)",
			apply: flag(func(c *cmdline, from string) { c.set.KeepCapabilities.set(true, from) })},
		{long: "tor-stop", ours: true, help: "Stop the tor torsocks started for this user, and exit",
			apply: flag(func(c *cmdline, _ string) { c.action = TorStop })},
		{long: "doctor", ours: true, help: "Say what works on this machine for this user and why (options before it apply), and exit",
			apply: flag(func(c *cmdline, _ string) { c.action = Doctor })},
		{long: "tor-start", arg: "MODE", ours: true, help: "Start a tor of our own: auto (default: if none answers), never, always",
			apply: value(setTorStart)},
		{long: "tor-config", arg: "FILE", ours: true, help: "Extra torrc lines for the tor torsocks starts (bridges...)",
			apply: value(setTorConfig)},
		{long: "tor-binary", arg: "PATH", ours: true, help: "The tor torsocks starts (default tor from PATH)",
			apply: value(setTorBinary)},
		{long: "tor-bootstrap-timeout", arg: "SECONDS", ours: true, help: "Give up when the tor we start has not bootstrapped (default 120)",
			apply: value(setTorBootstrap)},
	}
}

func findShort(b byte) *option {
	for i := range options {
		if options[i].short == b && b != 0 {
			return &options[i]
		}
	}
	return nil
}

func findLong(name string) *option {
	for i := range options {
		if options[i].long == name {
			return &options[i]
		}
	}
	return nil
}

// parseCommandLine reads options up to the command. It accepts what torsocks' wrapper accepts
// ("-u NAME", "--user NAME") and what getopt_long would ("-uNAME", "--user=NAME", "-di"), "--"
// ends the options. Parsing stops at -h, --version, --shell, on, off and show, as in torsocks.
func parseCommandLine(args []string, getenv func(string) (string, bool)) (*cmdline, error) {
	c := &cmdline{}
	i, dashdash := 0, false
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			i, dashdash = i+1, true
			break
		}
		if a == "-" || !strings.HasPrefix(a, "-") {
			break
		}
		var err error
		if strings.HasPrefix(a, "--") {
			i, err = c.long(args, i)
		} else {
			i, err = c.shorts(args, i)
		}
		if err != nil {
			return nil, err
		}
		if c.action != Run || c.shell {
			// torsocks stops at these; what follows --help or --version is ignored as it is there.
			if c.shell && i+1 < len(args) {
				return nil, usageErrorf("--shell takes no command (got %s)", show(args[i+1]))
			}
			if c.shell {
				sh, ok := getenv("SHELL")
				if !ok || sh == "" {
					sh = "/bin/sh"
				}
				c.command = []string{sh}
			}
			return c, nil
		}
	}
	rest := args[i:]
	if len(rest) == 0 {
		return nil, usageErrorf("no command given: torsocks [OPTIONS] COMMAND [ARG...]")
	}
	switch rest[0] {
	case "on", "off", "show":
		if !dashdash {
			c.action = OnOffShow
			c.command = rest[:1]
			return c, nil
		}
	}
	c.command = rest
	return c, nil
}

func (c *cmdline) long(args []string, i int) (int, error) {
	a := args[i]
	name, val, hasVal := strings.Cut(a[2:], "=")
	o := findLong(name)
	if o == nil {
		return i, usageErrorf("unknown option %s", show("--"+name))
	}
	from := "--" + name
	if o.arg == "" {
		if hasVal {
			return i, usageErrorf("option %s takes no value", from)
		}
		return i, o.apply(c, "", from)
	}
	return c.withValue(o, from, val, hasVal, args, i)
}

// shorts reads a cluster of short options ("-d", "-di", "-uNAME", "-u NAME").
func (c *cmdline) shorts(args []string, i int) (int, error) {
	a := args[i]
	for j := 1; j < len(a); j++ {
		o := findShort(a[j])
		if o == nil {
			return i, usageErrorf("unknown option %s", show("-"+a[j:j+1]))
		}
		from := "-" + string(a[j])
		if o.arg == "" {
			if err := o.apply(c, "", from); err != nil {
				return i, err
			}
			if c.action != Run || c.shell {
				return i, nil
			}
			continue
		}
		return c.withValue(o, from, a[j+1:], j+1 < len(a), args, i)
	}
	return i, nil
}

// withValue applies o, typed as from, to its value: inline ("--user=NAME", "-uNAME") when
// hasInline, else the next argument (which it consumes). It returns the index of the last
// argument read.
func (c *cmdline) withValue(o *option, from, inline string, hasInline bool, args []string, i int) (int, error) {
	val := inline
	if !hasInline {
		if i+1 >= len(args) {
			return i, usageErrorf("option %s needs a value (%s)", from, o.arg)
		}
		i++
		val = args[i]
	}
	if val == "" {
		return i, usageErrorf("option %s needs a non-empty value (%s)", from, o.arg)
	}
	if err := o.apply(c, val, from); err != nil {
		return i, fmt.Errorf("%s: %w", from, err)
	}
	return i, nil
}

// Usage is the --help text.
func Usage() string {
	var b strings.Builder
	b.WriteString(`Usage: torsocks [OPTIONS] COMMAND [ARG...]
       torsocks [OPTIONS] --shell

Runs COMMAND with every network connection of it and of its descendants sent through Tor.

Options:
`)
	writeOpts := func(ours bool) {
		for _, o := range options {
			if o.ours != ours {
				continue
			}
			var name string
			if o.short != 0 {
				name = fmt.Sprintf("-%c, --%s", o.short, o.long)
			} else {
				name = "    --" + o.long
			}
			if o.arg != "" {
				name += " " + o.arg
			}
			fmt.Fprintf(&b, "  %-31s %s\n", name, o.help)
		}
	}
	writeOpts(false)
	b.WriteString(`  on, off, show                   Not available: they need LD_PRELOAD (use --shell)

Additions of this torsocks:
`)
	writeOpts(true)
	b.WriteString(`
Environment: TORSOCKS_CONF_FILE, TORSOCKS_LOG_LEVEL, TORSOCKS_LOG_TIME,
TORSOCKS_LOG_FILE_PATH, TORSOCKS_USERNAME, TORSOCKS_PASSWORD, TORSOCKS_TOR_ADDRESS,
TORSOCKS_TOR_PORT, TORSOCKS_ALLOW_INBOUND, TORSOCKS_ISOLATE_PID, TORSOCKS_ENABLE_IPV6;
ours: TORSOCKS_TOR_ADDRESS_IPV6, TORSOCKS_ALLOW_OUTBOUND_LOCALHOST,
TORSOCKS_CONNECT_TIMEOUT, TORSOCKS_DNS_MODE, TORSOCKS_KEEP_CAPABILITIES,
TORSOCKS_VET_RECEIVED_SOCKETS, TORSOCKS_SEALED_NETWORK, TORSOCKS_ASYNC_CONNECT,
TORSOCKS_TOR_START, TORSOCKS_TOR_CONFIG, TORSOCKS_TOR_BINARY,
TORSOCKS_TOR_BOOTSTRAP_TIMEOUT, TORSOCKS_TOR_IDLE_TIME.
Precedence: defaults < config file < environment < options.

Examples:
    $ torsocks ssh user@host.com -p 1234
    $ torsocks -i curl https://check.torproject.org/

See torsocks(1) and torsocks.conf(5).
`)
	return b.String()
}
