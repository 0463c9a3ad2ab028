// Package torstart starts and shares a tor of the user's own when none is running: its one job is
// that torsocks COMMAND works on a machine where tor is installed but not running (issue 13).
//
// One tor per user: its DataDirectory is under the user's cache directory, its SocksPort and
// ControlPort are unix sockets in a private runtime directory, and a lock file there makes
// racing starts end with one tor. Tor is always run with a torrc of ours (-f) and an empty
// --defaults-torrc, never /etc/tor/torrc; the user's extra lines (TorConfig) are appended. Tor is
// the child of a keeper process (RunKeeper), which stops it once no torsocks has used it for the
// idle time.
package torstart

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// Paths are where the user's tor keeps its state.
type Paths struct {
	// RunDir is private (0700, the user's): sockets, cookie, pid file, torrc, log, locks.
	RunDir string
	// DataDir is tor's DataDirectory (kept between runs: the consensus, guards).
	DataDir string
}

func (p Paths) join(name string) string { return filepath.Join(p.RunDir, name) }

// Socks is the unix SocksPort.
func (p Paths) Socks() string { return p.join("socks") }

// Control is the unix ControlPort.
func (p Paths) Control() string { return p.join("control") }

// Cookie is the control port's authentication cookie.
func (p Paths) Cookie() string { return p.join("control.authcookie") }

// PidFile is tor's PidFile.
func (p Paths) PidFile() string { return p.join("tor.pid") }

// KeeperPid is the pid file of the keeper (RunKeeper), tor's parent.
func (p Paths) KeeperPid() string { return p.join("keeper.pid") }

// Log is tor's notice-level log.
func (p Paths) Log() string { return p.join("tor.log") }

// Output is tor's stdout and stderr (what it says before its log is configured).
func (p Paths) Output() string { return p.join("tor.out") }

// Torrc is the torrc torsocks writes (-f).
func (p Paths) Torrc() string { return p.join("torrc") }

// Defaults is the empty --defaults-torrc.
func (p Paths) Defaults() string { return p.join("torrc-defaults") }

// Lock is taken exclusively while a torsocks checks for, starts or stops the tor.
func (p Paths) Lock() string { return p.join("lock") }

// Users is held shared by every torsocks using the tor (for the idle exit).
func (p Paths) Users() string { return p.join("users") }

// UserPaths returns the paths of user uid: DataDir $XDG_CACHE_HOME/torsocks/tor (else
// $HOME/.cache/torsocks/tor), RunDir $XDG_RUNTIME_DIR/torsocks (else /tmp/torsocks-UID). Relative
// XDG values are ignored, as the XDG base directory specification says.
func UserPaths(getenv func(string) (string, bool), uid int) (Paths, error) {
	var p Paths
	if v, ok := getenv("XDG_RUNTIME_DIR"); ok && filepath.IsAbs(v) {
		p.RunDir = filepath.Join(v, "torsocks")
	} else {
		p.RunDir = filepath.Join(os.TempDir(), "torsocks-"+strconv.Itoa(uid))
	}
	if v, ok := getenv("XDG_CACHE_HOME"); ok && filepath.IsAbs(v) {
		p.DataDir = filepath.Join(v, "torsocks", "tor")
	} else if home, ok := getenv("HOME"); ok && filepath.IsAbs(home) {
		p.DataDir = filepath.Join(home, ".cache", "torsocks", "tor")
	} else {
		return Paths{}, errors.New("torstart: neither XDG_CACHE_HOME nor HOME is an absolute path: nowhere to keep tor's data directory")
	}
	// sun_path holds 107 bytes and a NUL.
	if n := len(p.Control()); n > 107 {
		return Paths{}, fmt.Errorf("torstart: runtime directory %s is too long for a unix socket path (%d bytes)", p.RunDir, n)
	}
	return p, nil
}

// Prepare creates RunDir (0700) and DataDir (0700, with its parents) and refuses a RunDir that is
// not a directory of uid's closed to group and others (someone else could then read the control
// cookie or replace the sockets).
func (p Paths) Prepare(uid int) error {
	if err := os.Mkdir(p.RunDir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("torstart: runtime directory: %w", err)
	}
	if err := checkPrivateDir(p.RunDir, uid); err != nil {
		return err
	}
	if err := os.MkdirAll(p.DataDir, 0o700); err != nil {
		return fmt.Errorf("torstart: data directory: %w", err)
	}
	// Tor refuses a DataDirectory open to group or others.
	if err := checkPrivateDir(p.DataDir, uid); err != nil {
		return err
	}
	return nil
}

func checkPrivateDir(dir string, uid int) error {
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return fmt.Errorf("torstart: %s: %w", dir, err)
	}
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return fmt.Errorf("torstart: %s is not a directory (a symbolic link?): refusing to keep tor's sockets there", dir)
	case int(st.Uid) != uid:
		return fmt.Errorf("torstart: %s belongs to uid %d, not to uid %d: refusing to keep tor's sockets there", dir, st.Uid, uid)
	case st.Mode&0o077 != 0:
		return fmt.Errorf("torstart: %s has mode %04o, open to group or others: refusing to keep tor's sockets there (chmod 700 it)", dir, st.Mode&0o7777)
	}
	return nil
}
