package testnet

import (
	"crypto/sha256"
	"encoding/base64"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseCircuits(t *testing.T) {
	in := `12 BUILT $AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA~exit0,$BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB~auth1 BUILD_FLAGS=NEED_CAPACITY,NEED_UPTIME PURPOSE=GENERAL TIME_CREATED=2026-11-22T21:44:15.123456 SOCKS_USERNAME="al ice" SOCKS_PASSWORD="p\"w"
13 LAUNCHED BUILD_FLAGS=IS_INTERNAL PURPOSE=HS_CLIENT_HSDIR HS_STATE=HSCI_CONNECTING REND_QUERY=abc`
	cs, err := parseCircuits(in)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 2 {
		t.Fatalf("got %d circuits", len(cs))
	}
	c := cs[0]
	if c.ID != "12" || c.Status != "BUILT" || c.Purpose != "GENERAL" || c.SOCKSUsername != "al ice" || c.SOCKSPassword != `p"w` {
		t.Errorf("circuit 12: %+v", c)
	}
	wantPath := []Hop{{strings.Repeat("A", 40), "exit0"}, {strings.Repeat("B", 40), "auth1"}}
	if !reflect.DeepEqual(c.Path, wantPath) {
		t.Errorf("path %v", c.Path)
	}
	if !reflect.DeepEqual(c.BuildFlags, []string{"NEED_CAPACITY", "NEED_UPTIME"}) {
		t.Errorf("build flags %v", c.BuildFlags)
	}
	if c := cs[1]; c.Path != nil || c.HSState != "HSCI_CONNECTING" || c.RendQuery != "abc" || c.Fields["PURPOSE"] != "HS_CLIENT_HSDIR" {
		t.Errorf("circuit 13: %+v", c)
	}
}

func TestParseStreams(t *testing.T) {
	ss, err := parseStreams("5 SUCCEEDED 12 203.0.113.10:8080\n6 NEW 0 x.onion:80\n")
	if err != nil {
		t.Fatal(err)
	}
	want := []Stream{{"5", "SUCCEEDED", "12", "203.0.113.10:8080"}, {"6", "NEW", "0", "x.onion:80"}}
	if !reflect.DeepEqual(ss, want) {
		t.Errorf("got %+v", ss)
	}
}

func TestParseConsensus(t *testing.T) {
	doc := "network-status-version 3\nvalid-after 2026-11-22 21:44:10\nr auth0 AAAA BBBB 2026-11-22 21:44:02 127.0.0.1 15000 15001\ns Authority Running Valid\nr exit0 CCCC DDDD 2026-11-22 21:44:02 127.0.0.1 15006 15007\ns Exit Valid\n"
	va, rs := parseConsensus([]byte(doc))
	if va != "2026-11-22 21:44:10" || len(rs) != 2 || rs[0].Nickname != "auth0" || !hasFlag(rs[0].Flags, "Running") || hasFlag(rs[1].Flags, "Running") {
		t.Errorf("got %q %+v", va, rs)
	}
}

func TestVotingStartOffset(t *testing.T) {
	for _, vote := range []int64{1_800_000_003, 1_800_000_016, 1_800_000_020} {
		off := int64(votingStartOffset(time.Unix(vote, 0)))
		// Intervals start at midnight (a multiple of the interval) plus the
		// offset; the vote is VoteDelay+DistDelay before one starts.
		if (vote+voteDelay+distDelay-off)%votingInterval != 0 || off < 0 || off >= votingInterval {
			t.Errorf("vote at %d: offset %d", vote, off)
		}
	}
}

func TestParseCertificate(t *testing.T) {
	fp, exp := parseCertificate([]byte("dir-key-certificate-version 3\nfingerprint AD85624F40C73833483248CDBE3A67DFB924F5D5\ndir-key-published 2026-11-22 21:40:47\ndir-key-expires 2027-11-22 21:40:47\n"))
	if fp != "AD85624F40C73833483248CDBE3A67DFB924F5D5" || exp.Year() != 2027 {
		t.Errorf("got %q %v", fp, exp)
	}
}

func TestExcerpt(t *testing.T) {
	var log []string
	for i := 0; i < 40; i++ {
		log = append(log, "notice line")
	}
	log[3] = "Nov 22 [warn] something broke"
	log[4] = "Nov 22 [warn] You are running Tor as root. You don't need to"
	got := excerpt("exit0", strings.Join(log, "\n"), 8, 5)
	if !strings.Contains(got, "something broke") || strings.Contains(got, "as root") || strings.Count(got, "notice line") != 5 {
		t.Errorf("excerpt:%s", got)
	}
}

func TestTorrc(t *testing.T) {
	n := &Network{opts: Options{Dir: t.TempDir(), BasePort: 15000, Exits: 2, ExitSource: netip.MustParseAddr("198.51.100.1"),
		OnionTarget: "203.0.113.10:8080", OnionSource: netip.MustParseAddr("127.0.0.3"), Resolver: "127.0.0.1:5353", RejectPorts: []uint16{25}, NoIPv6: true}}
	if err := n.layout(); err != nil {
		t.Fatal(err)
	}
	for _, nd := range n.relays() {
		nd.Fingerprint, nd.V3Ident = strings.Repeat("F", 40), strings.Repeat("E", 40)
	}
	exit := n.Nodes[3]
	rc := n.torrc(exit)
	for _, want := range []string{
		"TestingTorNetwork 1\n", "ORPort 127.0.0.1:15006\n", "ExitPolicyRejectPrivate 0\n",
		"ExitPolicy reject *:25\nExitPolicy accept 127.0.0.0/8:*\n", "OutboundBindAddressExit 198.51.100.1\n",
		"ServerDNSTestAddresses\n", "IPv6Exit 0\n",
		"DirAuthority auth2 orport=15004 v3ident=" + strings.Repeat("E", 40) + " 127.0.0.1:15005 " + strings.Repeat("F", 40) + "\n",
	} {
		if !strings.Contains(rc, want) {
			t.Errorf("exit torrc lacks %q:\n%s", want, rc)
		}
	}
	rc = n.torrc(n.node(RoleClient))
	if !strings.Contains(rc, "SocksPort 127.0.0.1:15011 ExtendedErrors\n") || !strings.Contains(rc, "ControlPort 127.0.0.1:15010\n") {
		t.Errorf("client torrc:\n%s", rc)
	}
	if rc := n.torrc(n.node(RoleOnion)); !strings.Contains(rc, "HiddenServicePort 80 203.0.113.10:8080\nOutboundBindAddressExit 127.0.0.3\n") {
		t.Errorf("onion torrc:\n%s", rc)
	}
}

func TestMicrodescDigests(t *testing.T) {
	file := "@last-listed 2026-11-22 21:47:53\nonion-key\nntor-onion-key abc\nid ed25519 x\n@last-listed 2026-11-22 21:47:53\nonion-key\nntor-onion-key def\n"
	got := map[string]bool{}
	microdescDigests([]byte(file), got)
	for _, body := range []string{"onion-key\nntor-onion-key abc\nid ed25519 x\n", "onion-key\nntor-onion-key def\n"} {
		sum := sha256.Sum256([]byte(body))
		if d := base64.RawStdEncoding.EncodeToString(sum[:]); !got[d] {
			t.Errorf("digest of %q missing from %v", body, got)
		}
	}
	if len(got) != 2 {
		t.Errorf("got %d digests", len(got))
	}
}
