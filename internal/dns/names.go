package dns

import (
	"bufio"
	"bytes"
	"net/netip"
	"strconv"
	"strings"

	"github.com/gotorsocks/torsocks/internal/standin"
)

// isLocalhost reports whether the normalised name is one of the loopback names
// answered locally (torsocks' list, plus RFC 6761's *.localhost).
func isLocalhost(name string) bool {
	switch name {
	case "localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback":
		return true
	}
	return strings.HasSuffix(name, ".localhost")
}

// validHost reports whether the normalised name is a host name an exit could
// resolve: labels of 1 to 63 letters, digits, '-' or '_', 253 bytes at most.
func validHost(name string) bool {
	if len(name) == 0 || len(name) > 253 {
		return false
	}
	label := 0
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c == '.':
			if label == 0 {
				return false
			}
			label = 0
			continue
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return false
		}
		if label++; label > 63 {
			return false
		}
	}
	return label > 0
}

// parseReverse returns the address a normalised reverse name stands for:
// "4.3.2.1.in-addr.arpa" (1.2.3.4) or 32 nibbles then "ip6.arpa".
func parseReverse(name string) (netip.Addr, bool) {
	if rest, ok := strings.CutSuffix(name, ".in-addr.arpa"); ok {
		labels := strings.Split(rest, ".")
		if len(labels) != 4 {
			return netip.Addr{}, false
		}
		var b [4]byte
		for i, l := range labels {
			if len(l) == 0 || len(l) > 3 || (len(l) > 1 && l[0] == '0') {
				return netip.Addr{}, false
			}
			n, err := strconv.ParseUint(l, 10, 8)
			if err != nil {
				return netip.Addr{}, false
			}
			b[3-i] = byte(n)
		}
		return netip.AddrFrom4(b), true
	}
	if rest, ok := strings.CutSuffix(name, ".ip6.arpa"); ok {
		if len(rest) != 63 {
			return netip.Addr{}, false
		}
		var b [16]byte
		for i := 0; i < 32; i++ {
			c := rest[2*i]
			if i < 31 && rest[2*i+1] != '.' {
				return netip.Addr{}, false
			}
			var v byte
			switch {
			case '0' <= c && c <= '9':
				v = c - '0'
			case 'a' <= c && c <= 'f':
				v = c - 'a' + 10
			default:
				return netip.Addr{}, false
			}
			// nibble i counts from the least significant end
			pos := 31 - i
			if pos%2 == 0 {
				b[pos/2] |= v << 4
			} else {
				b[pos/2] |= v
			}
		}
		return netip.AddrFrom16(b), true
	}
	return netip.Addr{}, false
}

// hostsTable is /etc/hosts, read once.
type hostsTable struct {
	byName map[string][]netip.Addr // normalised name -> addresses, in file order
	byAddr map[netip.Addr]string   // address -> first name listed for it
}

// parseHosts parses hosts(5) text: "address name [alias...]" lines, '#'
// comments. Bad lines are skipped.
func parseHosts(b []byte) hostsTable {
	h := hostsTable{byName: map[string][]netip.Addr{}, byAddr: map[netip.Addr]string{}}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		a, err := netip.ParseAddr(f[0])
		if err != nil {
			continue
		}
		a = a.WithZone("").Unmap()
		for _, n := range f[1:] {
			n = standin.Normalize(n)
			if n == "" {
				continue
			}
			if !containsAddr(h.byName[n], a) {
				h.byName[n] = append(h.byName[n], a)
			}
			if _, ok := h.byAddr[a]; !ok {
				h.byAddr[a] = n
			}
		}
	}
	return h
}

func containsAddr(as []netip.Addr, a netip.Addr) bool {
	for _, x := range as {
		if x == a {
			return true
		}
	}
	return false
}
