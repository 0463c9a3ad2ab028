package integration

import (
	"strconv"
	"strings"
	"testing"

	"github.com/gotorsocks/torsocks/internal/launch"
)

// A root program under torsocks cannot reconfigure the network or the kernel: the capabilities for
// that (launch.DroppedCapabilities) are gone from all its sets, so it cannot add a route or a
// network device (which would give it a way out no system call the filter sees would show), while
// what root programs normally do through torsocks keeps working: dropping to another user
// (setpriv, the sudo/su pattern; apt-get's _apt sandbox does the same) and fetching through Tor.
// KeepCapabilities gives them back. On the previous code, the route was added.
func TestRootCapabilitiesDropped(t *testing.T) {
	env(t)
	var mask uint64
	for _, c := range launch.DroppedCapabilities {
		mask |= 1 << c.Cap
	}
	capsOf := func(t *testing.T, r result) map[string]uint64 {
		t.Helper()
		sets := map[string]uint64{}
		for _, l := range strings.Split(r.stdout, "\n") {
			if f := strings.Fields(l); len(f) == 2 && strings.HasPrefix(f[0], "Cap") {
				v, err := strconv.ParseUint(f[1], 16, 64)
				if err != nil {
					t.Fatal(err)
				}
				sets[strings.TrimSuffix(f[0], ":")] = v
			}
		}
		return sets
	}
	r := torsocks(t, nil, "grep", "^Cap", "/proc/self/status")
	for _, set := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
		v, ok := capsOf(t, r)[set]
		if !ok {
			t.Fatalf("no %s in %q", set, r.stdout)
		}
		if v&mask != 0 {
			t.Errorf("%s %#x still has %#x of the dropped capabilities", set, v, v&mask)
		}
	}
	if v := capsOf(t, r)["CapEff"]; v&(1<<0) == 0 { // CAP_CHOWN: the rest of root stays
		t.Errorf("CapEff %#x lost capabilities it should keep", v)
	}

	const route = "198.51.100.0/24"
	r = torsocks(t, nil, "ip", "route", "add", route, "dev", "lo")
	if r.code == 0 || !strings.Contains(r.stderr, "Operation not permitted") {
		t.Errorf("ip route add under torsocks: exit %d, want EPERM\n%s", r.code, r.stderr)
	}
	r = torsocks(t, nil, "ip", "link", "add", "tsdummy0", "type", "dummy")
	if r.code == 0 || !strings.Contains(r.stderr, "Operation not permitted") {
		t.Errorf("ip link add under torsocks: exit %d, want EPERM\n%s", r.code, r.stderr)
	}
	r = torsocks(t, nil, "ip", "tuntap", "add", "dev", "tstun0", "mode", "tun")
	if r.code == 0 || !strings.Contains(r.stderr, "Operation not permitted") {
		t.Errorf("ip tuntap add under torsocks: exit %d, want EPERM\n%s", r.code, r.stderr)
	}
	if r := runCmd(t, nil, "ip", "link", "show", "tstun0"); r.code == 0 {
		runCmd(t, nil, "ip", "link", "del", "tstun0")
		t.Errorf("the TUN device was created: %s", r.stdout)
	}
	if r := runCmd(t, nil, "ip", "route", "show", route); strings.TrimSpace(r.stdout) != "" {
		runCmd(t, nil, "ip", "route", "del", route)
		t.Errorf("the route was added: %s", r.stdout)
	}
	runCmd(t, nil, "ip", "link", "del", "tsdummy0")

	// The sudo pattern: root drops to another user, then goes through Tor.
	r = torsocks(t, nil, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
		"curl", "-sS", "--max-time", "20", "http://203.0.113.10/")
	if r.code != 0 || !strings.Contains(r.stdout, "canary") {
		t.Errorf("setpriv + curl under torsocks: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}

	// KeepCapabilities: the program may reconfigure the network again (the test's own namespace).
	for _, keep := range [][]string{{"--keep-capabilities"}, {}} {
		var env []string
		if len(keep) == 0 {
			env = []string{"TORSOCKS_KEEP_CAPABILITIES=1"}
		}
		r = torsocks(t, env, append(keep, "ip", "route", "add", route, "dev", "lo")...)
		if r.code != 0 {
			t.Errorf("KeepCapabilities (%v%v): ip route add: exit %d\n%s", keep, env, r.code, r.stderr)
		}
		if r := runCmd(t, nil, "ip", "route", "del", route); r.code != 0 {
			t.Errorf("KeepCapabilities (%v%v): the route is not there: %s", keep, env, r.stderr)
		}
	}
	noLeaks(t)
}
