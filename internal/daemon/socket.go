package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"banger/internal/errdefs"
	"banger/internal/rpc"
	"banger/internal/system"
)

// ensureGroup returns the gid of name, creating the group (groupadd
// --system) when it does not exist.
func ensureGroup(ctx context.Context, runner system.Runner, name string) (uint32, error) {
	g, err := user.LookupGroup(name)
	var unknown user.UnknownGroupError
	if errors.As(err, &unknown) {
		if _, err := runner.Run(ctx, "groupadd", "--system", "--", name); err != nil {
			return 0, fmt.Errorf("create group %q for the socket: %w", name, err)
		}
		g, err = user.LookupGroup(name)
	}
	if err != nil {
		return 0, fmt.Errorf("look up group %q: %w", name, err)
	}
	gid, err := strconv.ParseUint(g.Gid, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("group %q has a non-numeric gid %q", name, g.Gid)
	}
	return uint32(gid), nil
}

// listen creates the socket 0660 root:gid. A live socket at path means
// another daemon serves it: refused, and left alone. A dead one (a crash
// left it) is replaced.
func listen(ctx context.Context, path string, gid uint32) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	if _, err := os.Lstat(path); err == nil {
		dctx, cancel := context.WithTimeout(ctx, time.Second)
		var d net.Dialer
		c, derr := d.DialContext(dctx, "unix", path)
		cancel()
		if derr == nil {
			c.Close()
			return nil, fmt.Errorf("socket %s is served by another banger daemon (another root?): stop it or use another --socket: %w", path, errdefs.ErrBusy)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
		}
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	// Close would unlink the path; we remove it ourselves in Daemon.Close
	// so that a failed start never deletes another daemon's socket.
	l.SetUnlinkOnClose(false)
	if err := os.Chown(path, 0, int(gid)); err != nil {
		l.Close()
		os.Remove(path)
		return nil, fmt.Errorf("chown socket: %w", err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		os.Remove(path)
		return nil, fmt.Errorf("chmod socket: %w", err)
	}
	return l, nil
}

// authorizer admits root, the daemon's own user, and members of gid
// (primary or supplementary, read from /proc/PID/status of the peer).
type authorizer struct {
	gid      uint32
	selfUID  uint32
	procRoot string // "/proc"; tests may point elsewhere
}

func (a authorizer) authorize(p rpc.PeerCred) error {
	if p.UID == 0 || p.UID == a.selfUID || p.GID == a.gid {
		return nil
	}
	groups, err := peerGroups(filepath.Join(a.procRoot, strconv.Itoa(int(p.PID)), "status"))
	if err != nil {
		return fmt.Errorf("read groups of pid %d: %w", p.PID, err)
	}
	for _, g := range groups {
		if g == a.gid {
			return nil
		}
	}
	return fmt.Errorf("uid %d is neither root nor in group %d", p.UID, a.gid)
}

func peerGroups(statusPath string) ([]uint32, error) {
	f, err := os.Open(statusPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "Groups:")
		if !ok {
			continue
		}
		var out []uint32
		for _, field := range strings.Fields(rest) {
			g, err := strconv.ParseUint(field, 10, 32)
			if err != nil {
				return nil, fmt.Errorf("bad Groups entry %q", field)
			}
			out = append(out, uint32(g))
		}
		return out, nil
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return nil, errors.New("no Groups line")
}
