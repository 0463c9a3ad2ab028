package config

import (
	"net/netip"
	"time"
)

// Opt is one optional setting of a layer: Set tells whether the layer gave it, From where
// ("FILE:LINE", "TORSOCKS_TOR_PORT", "--port", "default").
type Opt[T any] struct {
	Val  T
	Set  bool
	From string
}

func (o *Opt[T]) set(v T, from string) { o.Val, o.Set, o.From = v, true, from }

// over lets a higher-precedence layer's setting replace a lower one's.
func over[T any](dst *Opt[T], src Opt[T]) {
	if src.Set {
		*dst = src
	}
}

// Settings is one layer of configuration: the defaults, the config file, the environment or the
// command line. Parse merges the layers, each overriding the one before.
type Settings struct {
	TorAddress             Opt[TorAddr]
	TorPort                Opt[uint16]
	TorAddressIPv6         Opt[netip.AddrPort] // port 0: TorPort's
	OnionAddrRange         Opt[netip.Prefix]
	Username               Opt[string]
	Password               Opt[string]
	AllowInbound           Opt[bool]
	AllowOutboundLocalhost Opt[int]
	IsolatePID             Opt[bool]
	KeepCapabilities       Opt[bool]
	EnableIPv6             Opt[bool]
	VetReceivedSockets     Opt[bool]
	SealedNetwork          Opt[bool]
	AsyncConnect           Opt[bool]
	ConnectTimeout         Opt[time.Duration]
	DNSMode                Opt[string]
	TorStart               Opt[string]
	TorConfig              Opt[string]
	TorBinary              Opt[string]
	TorBootstrapTimeout    Opt[time.Duration]
	TorIdleTime            Opt[time.Duration]
	LogLevel               Opt[int]    // environment and command line only
	LogTime                Opt[bool]   // environment only
	LogFile                Opt[string] // environment only
}

// FileSettings is what a config file sets.
type FileSettings = Settings

// mergeFrom lays src over s.
func (s *Settings) mergeFrom(src *Settings) {
	over(&s.TorAddress, src.TorAddress)
	over(&s.TorPort, src.TorPort)
	over(&s.TorAddressIPv6, src.TorAddressIPv6)
	over(&s.OnionAddrRange, src.OnionAddrRange)
	over(&s.Username, src.Username)
	over(&s.Password, src.Password)
	over(&s.AllowInbound, src.AllowInbound)
	over(&s.AllowOutboundLocalhost, src.AllowOutboundLocalhost)
	over(&s.IsolatePID, src.IsolatePID)
	over(&s.KeepCapabilities, src.KeepCapabilities)
	over(&s.EnableIPv6, src.EnableIPv6)
	over(&s.VetReceivedSockets, src.VetReceivedSockets)
	over(&s.SealedNetwork, src.SealedNetwork)
	over(&s.AsyncConnect, src.AsyncConnect)
	over(&s.ConnectTimeout, src.ConnectTimeout)
	over(&s.DNSMode, src.DNSMode)
	over(&s.TorStart, src.TorStart)
	over(&s.TorConfig, src.TorConfig)
	over(&s.TorBinary, src.TorBinary)
	over(&s.TorBootstrapTimeout, src.TorBootstrapTimeout)
	over(&s.TorIdleTime, src.TorIdleTime)
	over(&s.LogLevel, src.LogLevel)
	over(&s.LogTime, src.LogTime)
	over(&s.LogFile, src.LogFile)
}

// Defaults of every setting.
const (
	DefaultConfigFile     = "/etc/tor/torsocks.conf"
	DefaultConnectTimeout = 120 * time.Second
	// DefaultVetReceivedSockets: off, because vetting notifies every recvmsg and recvmmsg, which
	// costs programs that talk a lot over unix sockets (D-Bus, Wayland) several times their
	// message rate (docs/benchmarks.md, "Vetting received sockets"). Flip it here.
	DefaultVetReceivedSockets = false
	// DefaultSealedNetwork: on. The program's TCP sockets live in the sandbox network namespace
	// (issue 10, docs/sealed-network.md); 0 keeps them on the host network, where only the
	// socket-option allowlist stands between them and the network (the mode torsocks falls back
	// to when no sandbox can be made).
	DefaultSealedNetwork = true
	// DefaultAsyncConnect: a non-blocking connect on a sealed socket returns EINPROGRESS at once
	// (issue 11); 0 blocks in connect until Tor answered, as the C torsocks does.
	DefaultAsyncConnect = true
	// DefaultTorBinary is looked up on PATH.
	DefaultTorBinary           = "tor"
	DefaultTorBootstrapTimeout = 120 * time.Second
	DefaultTorIdleTime         = 5 * time.Minute
)

var (
	DefaultTorAddress     = netip.MustParseAddr("127.0.0.1")
	DefaultOnionAddrRange = netip.MustParsePrefix("127.42.42.0/24")
)

const DefaultTorPort = 9050

func defaults() *Settings {
	const from = "default"
	var s Settings
	s.TorAddress.set(TorAddr{Addr: DefaultTorAddress}, from)
	s.TorPort.set(DefaultTorPort, from)
	s.OnionAddrRange.set(DefaultOnionAddrRange, from)
	s.AllowInbound.set(false, from)
	s.AllowOutboundLocalhost.set(0, from)
	s.IsolatePID.set(false, from)
	s.KeepCapabilities.set(false, from)
	s.EnableIPv6.set(true, from)
	s.VetReceivedSockets.set(DefaultVetReceivedSockets, from)
	s.SealedNetwork.set(DefaultSealedNetwork, from)
	s.AsyncConnect.set(DefaultAsyncConnect, from)
	s.ConnectTimeout.set(DefaultConnectTimeout, from)
	s.DNSMode.set(DNSMap, from)
	s.TorStart.set(TorStartAuto, from)
	s.TorConfig.set("", from)
	s.TorBinary.set(DefaultTorBinary, from)
	s.TorBootstrapTimeout.set(DefaultTorBootstrapTimeout, from)
	s.TorIdleTime.set(DefaultTorIdleTime, from)
	s.LogLevel.set(LogWarning, from)
	s.LogTime.set(true, from)
	s.LogFile.set("", from)
	return &s
}

// setter parses a value and stores it in a layer.
type setter func(s *Settings, v, from string) error

func setWith[T any](field func(*Settings) *Opt[T], parse func(string) (T, error)) setter {
	return func(s *Settings, v, from string) error {
		x, err := parse(v)
		if err != nil {
			return err
		}
		field(s).set(x, from)
		return nil
	}
}

var (
	setTorAddress     = setWith(func(s *Settings) *Opt[TorAddr] { return &s.TorAddress }, parseTorAddress)
	setTorPort        = setWith(func(s *Settings) *Opt[uint16] { return &s.TorPort }, parsePort)
	setTorAddressIPv6 = setWith(func(s *Settings) *Opt[netip.AddrPort] { return &s.TorAddressIPv6 }, parseTorAddressIPv6)
	setOnion          = setWith(func(s *Settings) *Opt[netip.Prefix] { return &s.OnionAddrRange }, parseOnionRange)
	setUsername       = setWith(func(s *Settings) *Opt[string] { return &s.Username },
		func(v string) (string, error) { return parseCredential("username", v) })
	setPassword = setWith(func(s *Settings) *Opt[string] { return &s.Password },
		func(v string) (string, error) { return parseCredential("password", v) })
	setAllowInbound   = setWith(func(s *Settings) *Opt[bool] { return &s.AllowInbound }, parseBool)
	setLocalhost      = setWith(func(s *Settings) *Opt[int] { return &s.AllowOutboundLocalhost }, parseLocalhost)
	setIsolatePID     = setWith(func(s *Settings) *Opt[bool] { return &s.IsolatePID }, parseBool)
	setKeepCaps       = setWith(func(s *Settings) *Opt[bool] { return &s.KeepCapabilities }, parseBool)
	setEnableIPv6     = setWith(func(s *Settings) *Opt[bool] { return &s.EnableIPv6 }, parseBool)
	setVetReceived    = setWith(func(s *Settings) *Opt[bool] { return &s.VetReceivedSockets }, parseBool)
	setSealedNetwork  = setWith(func(s *Settings) *Opt[bool] { return &s.SealedNetwork }, parseBool)
	setAsyncConnect   = setWith(func(s *Settings) *Opt[bool] { return &s.AsyncConnect }, parseBool)
	setConnectTimeout = setWith(func(s *Settings) *Opt[time.Duration] { return &s.ConnectTimeout }, parseTimeout)
	setDNSMode        = setWith(func(s *Settings) *Opt[string] { return &s.DNSMode }, parseDNSMode)
	setTorStart       = setWith(func(s *Settings) *Opt[string] { return &s.TorStart }, parseTorStart)
	setTorConfig      = setWith(func(s *Settings) *Opt[string] { return &s.TorConfig }, parsePath)
	setTorBinary      = setWith(func(s *Settings) *Opt[string] { return &s.TorBinary }, parsePath)
	setTorBootstrap   = setWith(func(s *Settings) *Opt[time.Duration] { return &s.TorBootstrapTimeout }, parseBootstrapTimeout)
	setTorIdleTime    = setWith(func(s *Settings) *Opt[time.Duration] { return &s.TorIdleTime }, parseIdleTime)
	setLogLevel       = setWith(func(s *Settings) *Opt[int] { return &s.LogLevel }, parseLogLevel)
	setLogTime        = setWith(func(s *Settings) *Opt[bool] { return &s.LogTime }, parseBool)
	setLogFile        = setWith(func(s *Settings) *Opt[string] { return &s.LogFile }, parsePath)
)

// fileKeys are the torsocks.conf keys, torsocks' nine and ours, in the order the docs list them.
var fileKeys = []struct {
	key string
	set setter
}{
	{"TorAddress", setTorAddress},
	{"TorPort", setTorPort},
	{"OnionAddrRange", setOnion},
	{"SOCKS5Username", setUsername},
	{"SOCKS5Password", setPassword},
	{"AllowInbound", setAllowInbound},
	{"AllowOutboundLocalhost", setLocalhost},
	{"IsolatePID", setIsolatePID},
	{"EnableIPv6", setEnableIPv6},
	// Additions of ours.
	{"TorAddressIPv6", setTorAddressIPv6},
	{"ConnectTimeout", setConnectTimeout},
	{"DNSMode", setDNSMode},
	{"KeepCapabilities", setKeepCaps},
	{"VetReceivedSockets", setVetReceived},
	{"SealedNetwork", setSealedNetwork},
	{"AsyncConnect", setAsyncConnect},
	{"TorStart", setTorStart},
	{"TorConfig", setTorConfig},
	{"TorBinary", setTorBinary},
	{"TorBootstrapTimeout", setTorBootstrap},
	{"TorIdleTime", setTorIdleTime},
}

// Environment variables.
const (
	EnvConfFile        = "TORSOCKS_CONF_FILE"
	EnvLogLevel        = "TORSOCKS_LOG_LEVEL"
	EnvLogTime         = "TORSOCKS_LOG_TIME"
	EnvLogFilePath     = "TORSOCKS_LOG_FILE_PATH"
	EnvUsername        = "TORSOCKS_USERNAME"
	EnvPassword        = "TORSOCKS_PASSWORD"
	EnvTorAddress      = "TORSOCKS_TOR_ADDRESS"
	EnvTorPort         = "TORSOCKS_TOR_PORT"
	EnvAllowInbound    = "TORSOCKS_ALLOW_INBOUND"
	EnvIsolatePID      = "TORSOCKS_ISOLATE_PID"
	EnvEnableIPv6      = "TORSOCKS_ENABLE_IPV6"
	EnvConnectTimeout  = "TORSOCKS_CONNECT_TIMEOUT"
	EnvDNSMode         = "TORSOCKS_DNS_MODE"
	EnvTorAddressIPv6  = "TORSOCKS_TOR_ADDRESS_IPV6"
	EnvAllowOutboundLo = "TORSOCKS_ALLOW_OUTBOUND_LOCALHOST"
	EnvKeepCaps        = "TORSOCKS_KEEP_CAPABILITIES"
	EnvVetReceived     = "TORSOCKS_VET_RECEIVED_SOCKETS"
	EnvSealedNetwork   = "TORSOCKS_SEALED_NETWORK"
	EnvAsyncConnect    = "TORSOCKS_ASYNC_CONNECT"
	EnvTorStart        = "TORSOCKS_TOR_START"
	EnvTorConfig       = "TORSOCKS_TOR_CONFIG"
	EnvTorBinary       = "TORSOCKS_TOR_BINARY"
	EnvTorBootstrap    = "TORSOCKS_TOR_BOOTSTRAP_TIMEOUT"
	EnvTorIdleTime     = "TORSOCKS_TOR_IDLE_TIME"
)

// envVars are the settings read from the environment (TORSOCKS_CONF_FILE is read apart).
var envVars = []struct {
	name string
	set  setter
}{
	{EnvLogLevel, setLogLevel},
	{EnvLogTime, setLogTime},
	{EnvLogFilePath, setLogFile},
	{EnvUsername, setUsername},
	{EnvPassword, setPassword},
	{EnvTorAddress, setTorAddress},
	{EnvTorPort, setTorPort},
	{EnvAllowInbound, setAllowInbound},
	{EnvIsolatePID, setIsolatePID},
	{EnvEnableIPv6, setEnableIPv6},
	// Additions of ours.
	{EnvConnectTimeout, setConnectTimeout},
	{EnvDNSMode, setDNSMode},
	{EnvTorAddressIPv6, setTorAddressIPv6},
	{EnvAllowOutboundLo, setLocalhost},
	{EnvKeepCaps, setKeepCaps},
	{EnvVetReceived, setVetReceived},
	{EnvSealedNetwork, setSealedNetwork},
	{EnvAsyncConnect, setAsyncConnect},
	{EnvTorStart, setTorStart},
	{EnvTorConfig, setTorConfig},
	{EnvTorBinary, setTorBinary},
	{EnvTorBootstrap, setTorBootstrap},
	{EnvTorIdleTime, setTorIdleTime},
}
