package testnet

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Voting schedule of the authorities (seconds). Never change the interval
// of a running network: the onion service's time period derives from it.
const (
	votingInterval = 20
	voteDelay      = 2
	distDelay      = 2
	// provisionalVoteAfter is when the authorities first vote if Start
	// does not reschedule: the vote is moved earlier (SIGHUP) as soon as
	// every relay's descriptor has reached every authority. A vote before
	// that yields a consensus without some relays and costs an interval.
	provisionalVoteAfter = 15 * time.Second
	// voteLead is how long after that moment the rescheduled vote is.
	voteLead = 1500 * time.Millisecond
)

func (n *Network) emptyFile() string     { return filepath.Join(n.opts.Dir, "empty") }
func (n *Network) bandwidthFile() string { return filepath.Join(n.opts.Dir, "bandwidths") }
func (n *Network) resolvConf() string    { return filepath.Join(n.opts.Dir, "resolv.conf") }

// writeCommonFiles writes the empty defaults/GeoIP file and the exits'
// resolv.conf.
func (n *Network) writeCommonFiles() error {
	if err := os.WriteFile(n.emptyFile(), nil, 0o644); err != nil {
		return fmt.Errorf("testnet: %w", err)
	}
	ns := n.opts.Resolver
	if ns == "" {
		ns = "127.0.0.1"
	}
	if err := os.WriteFile(n.resolvConf(), []byte("nameserver "+ns+"\n"), 0o644); err != nil {
		return fmt.Errorf("testnet: %w", err)
	}
	return nil
}

// prepareNode clears the node's data directory and old logs and writes its
// torrc.
func (n *Network) prepareNode(nd *Node) error {
	for _, name := range []string{"data", "notice.log", "stdout.log", "tor.pid", "control_auth_cookie"} {
		if err := os.RemoveAll(filepath.Join(nd.Dir, name)); err != nil {
			return fmt.Errorf("testnet: %s: %w", nd.Name, err)
		}
	}
	return n.writeTorrc(nd)
}

func (n *Network) writeTorrc(nd *Node) error {
	if err := os.WriteFile(filepath.Join(nd.Dir, "torrc"), []byte(n.torrc(nd)), 0o644); err != nil {
		return fmt.Errorf("testnet: %s torrc: %w", nd.Name, err)
	}
	return nil
}

// votingStartOffset returns the TestingV3AuthVotingStartOffset that makes
// the authorities vote at the whole second firstVote (before any consensus
// exists). Tor starts voting intervals at midnight UTC plus the offset, and
// votes VoteDelay+DistDelay before an interval starts.
func votingStartOffset(firstVote time.Time) int {
	validAfter := firstVote.Unix() + voteDelay + distDelay
	return int(validAfter % votingInterval)
}

// torrc returns the configuration of nd.
func (n *Network) torrc(nd *Node) string {
	o := n.opts
	var b strings.Builder
	set := func(key string, vals ...any) {
		b.WriteString(key)
		for _, v := range vals {
			fmt.Fprintf(&b, " %v", v)
		}
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "# %s (%s) of a private test network, written by internal/testnet\n", nd.Name, nd.Role)
	set("TestingTorNetwork", 1)
	set("Nickname", nd.Name)
	set("DataDirectory", filepath.Join(nd.Dir, "data"))
	set("PidFile", filepath.Join(nd.Dir, "tor.pid"))
	set("Log", "notice file", nd.LogFile)
	set("RunAsDaemon", 0)
	set("SafeLogging", 0)
	set("LogTimeGranularity", 1)
	set("Sandbox", 0)
	set("ShutdownWaitLength", 0)
	set("GeoIPFile", n.emptyFile())
	set("GeoIPv6File", n.emptyFile())
	set("AssumeReachable", 1)
	set("PathsNeededToBuildCircuits", 0.67)
	set("TestingDirAuthVoteExit", "*")
	set("TestingDirAuthVoteGuard", "*")
	set("TestingDirAuthVoteHSDir", "*")
	set("TestingMinExitFlagThreshold", 0)
	set("V3AuthNIntervalsValid", 2)
	set("ClientUseIPv6", 0)
	// Tor exits if this process goes away without stopping it.
	set("__OwningControllerProcess", os.Getpid())
	for _, a := range n.Nodes {
		if a.Role == RoleAuthority {
			set("DirAuthority", a.Name, fmt.Sprintf("orport=%d", a.ORPort), "v3ident="+a.V3Ident,
				fmt.Sprintf("127.0.0.1:%d", a.DirPort), a.Fingerprint)
		}
	}

	switch nd.Role {
	case RoleAuthority, RoleExit:
		set("KeyDirectory", filepath.Join(nd.Dir, "keys"))
		set("Address", "127.0.0.1")
		set("ORPort", fmt.Sprintf("127.0.0.1:%d", nd.ORPort))
		set("DirPort", fmt.Sprintf("127.0.0.1:%d", nd.DirPort))
		set("SocksPort", 0)
		set("ContactInfo", "testnet@example.invalid")
	}
	switch nd.Role {
	case RoleAuthority:
		set("AuthoritativeDirectory", 1)
		set("V3AuthoritativeDirectory", 1)
		set("ExitPolicy", "reject *:*")
		set("AuthDirMaxServersPerAddr", 0)
		set("V3AuthVotingInterval", votingInterval)
		set("V3AuthVoteDelay", voteDelay)
		set("V3AuthDistDelay", distDelay)
		// The same initial interval lets the first vote be up to 20 s away.
		set("TestingV3AuthInitialVotingInterval", votingInterval)
		set("TestingV3AuthInitialVoteDelay", voteDelay)
		set("TestingV3AuthInitialDistDelay", distDelay)
		set("TestingV3AuthVotingStartOffset", votingStartOffset(n.firstVote))
		set("V3BandwidthsFile", n.bandwidthFile())
		// A consensus every 20 s makes diff computation grow without bound.
		set("MaxConsensusAgeForDiffs", "1 minute")
	case RoleExit:
		set("ExitRelay", 1)
		set("IPv6Exit", 0)
		set("ExitPolicyRejectPrivate", 0)
		for _, p := range o.RejectPorts {
			set("ExitPolicy", fmt.Sprintf("reject *:%d", p))
		}
		// A loopback-only policy summarises to "reject 1-65535" in
		// microdescriptors, and clients then find no exit: end with *:*.
		set("ExitPolicy", "accept 127.0.0.0/8:*")
		set("ExitPolicy", "accept 203.0.113.0/24:*")
		set("ExitPolicy", "accept *:*")
		if o.ExitSource.IsValid() {
			set("OutboundBindAddressExit", o.ExitSource.Unmap())
		}
		set("ServerDNSResolvConfFile", n.resolvConf())
		set("ServerDNSDetectHijacking", 0)
		set("ServerDNSTestAddresses") // empty: probe no public names
		set("ServerDNSAllowBrokenConfig", 1)
	case RoleClient:
		set("SocksPort", fmt.Sprintf("%v ExtendedErrors", n.SocksAddr))
		if n.SocksAddrV6.IsValid() {
			set("SocksPort", fmt.Sprintf("%v ExtendedErrors", n.SocksAddrV6))
		}
		set("ControlPort", n.ControlAddr)
		set("CookieAuthentication", 1)
		set("CookieAuthFile", n.CookieFile)
	case RoleOnion:
		set("SocksPort", 0)
		set("HiddenServiceDir", filepath.Join(nd.Dir, "hs"))
		set("HiddenServicePort", 80, o.OnionTarget)
		if o.OnionSource.IsValid() {
			set("OutboundBindAddressExit", o.OnionSource.Unmap())
		}
	}
	return b.String()
}

// JoinTorrc returns the torrc lines a client tor started outside this package needs to join the
// network (its DirAuthority lines and the test-network options), e.g. for torsocks' TorConfig.
// They set no ports, directories, control or ownership options of their own.
func (n *Network) JoinTorrc() string {
	var b strings.Builder
	b.WriteString("# Joins the private test network of internal/testnet\n")
	for _, l := range []string{
		"TestingTorNetwork 1", "PathsNeededToBuildCircuits 0.67", "ClientUseIPv6 0",
		"Sandbox 0", "ShutdownWaitLength 0", "SafeLogging 0", "LogTimeGranularity 1",
		"GeoIPFile " + n.emptyFile(), "GeoIPv6File " + n.emptyFile(),
	} {
		b.WriteString(l + "\n")
	}
	for _, a := range n.Nodes {
		if a.Role == RoleAuthority {
			fmt.Fprintf(&b, "DirAuthority %s orport=%d v3ident=%s 127.0.0.1:%d %s\n",
				a.Name, a.ORPort, a.V3Ident, a.DirPort, a.Fingerprint)
		}
	}
	return b.String()
}
