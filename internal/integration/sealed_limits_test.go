package integration

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// connectedSockets counts the sockets the supervisor (pid) holds that are TCP connections (any
// state but LISTEN), on the host network or in the sandbox: its relays. Pooled sandbox sockets
// (unbound: in no table) and inner listeners do not count, so the count does not depend on how
// full the pool happens to be.
func connectedSockets(t *testing.T, pid int) int {
	t.Helper()
	conns := map[string]bool{} // socket inodes of TCP connections
	tables := []int{pid}
	if f := factoryPid(pid); f > 0 {
		tables = append(tables, f) // the sandbox's network namespace
	}
	for _, p := range tables {
		for _, name := range []string{"tcp", "tcp6"} {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", p, name))
			if err != nil {
				continue
			}
			sc := bufio.NewScanner(bytes.NewReader(b))
			sc.Scan() // header
			for sc.Scan() {
				f := strings.Fields(sc.Text())
				if len(f) > 9 && f[3] != "0A" { // 0A: LISTEN
					conns[f[9]] = true
				}
			}
		}
	}
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		l, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") && conns[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] {
			n++
		}
	}
	return n
}

// factoryPid is the pid of the supervisor's sandbox socket factory, 0 if it has none.
func factoryPid(supervisor int) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(f) < 2 || f[1] != strconv.Itoa(supervisor) {
			continue
		}
		if cmd, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); bytes.Contains(cmd, []byte("--internal-sandbox")) {
			return pid
		}
	}
	return 0
}
