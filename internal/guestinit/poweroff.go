package guestinit

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const (
	termGrace   = 3 * time.Second        // from SIGTERM to SIGKILL
	killGrace   = 1 * time.Second        // after SIGKILL
	hangupGrace = 500 * time.Millisecond // for SSH clients to hang up
)

// powerOff stops every process (SIGTERM, then SIGKILL after termGrace),
// lets SSH clients hear the last replies, syncs, unmounts what it can,
// remounts / read-only and powers off. It never returns: the init must
// not exit.
func powerOff(con *console, log *slog.Logger, srv *Server) {
	log.Info("powering off")
	_ = unix.Kill(-1, unix.SIGTERM)
	if left := waitForProcesses(termGrace); len(left) > 0 {
		log.Warn("processes ignored SIGTERM; killing them", "pids", left)
		_ = unix.Kill(-1, unix.SIGKILL)
		waitForProcesses(killGrace)
	}
	if srv != nil {
		srv.drain(hangupGrace)
	}
	unix.Sync()
	unmountAll(log)
	if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		log.Error("remounting / read-only", "err", err)
	}
	unix.Sync()
	con.marker(MarkerPoweroff)
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	log.Error("reboot(POWER_OFF) failed; halting here", "err", err)
	for {
		time.Sleep(time.Hour)
	}
}

// requestPoweroff asks the init (PID 1) to power off.
func requestPoweroff() { _ = unix.Kill(1, unix.SIGTERM) }

// waitForProcesses waits up to d for every user process but us to be gone
// and returns those left.
func waitForProcesses(d time.Duration) []int {
	deadline := time.Now().Add(d)
	for {
		left := userProcesses()
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// userProcesses lists the live processes other than us, leaving out kernel
// threads and zombies (the reaper collects those).
func userProcesses() []int {
	self := os.Getpid()
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self || pid == 1 {
			continue
		}
		data, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		st, err := parseStat(data)
		if err != nil || st.state == 'Z' || st.flags&pfKthread != 0 {
			continue
		}
		out = append(out, pid)
	}
	return out
}

const pfKthread = 0x00200000 // PF_KTHREAD in /proc/PID/stat's flags

type procStat struct {
	state byte
	ppid  int
	flags uint64
}

// parseStat reads the state, parent and flags fields of /proc/PID/stat.
// The command name may hold spaces and parentheses; it ends at the last ')'.
func parseStat(data []byte) (procStat, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return procStat{}, errors.New("malformed stat")
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 7 || len(f[0]) != 1 {
		return procStat{}, errors.New("malformed stat")
	}
	ppid, err1 := strconv.Atoi(f[1])
	flags, err2 := strconv.ParseUint(f[6], 10, 64)
	if err1 != nil || err2 != nil {
		return procStat{}, errors.New("malformed stat")
	}
	return procStat{state: f[0][0], ppid: ppid, flags: flags}, nil
}

// unmountAll unmounts everything but /, last mounted first, ignoring
// failures (the virtual file systems the init itself holds stay).
func unmountAll(log *slog.Logger) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, line := range bytes.Split(data, []byte("\n")) {
		if f := strings.Fields(string(line)); len(f) >= 5 && f[4] != "/" {
			points = append(points, unescapeMount(f[4]))
		}
	}
	slices.Reverse(points)
	for _, p := range points {
		if err := unix.Unmount(p, 0); err != nil {
			log.Debug("unmount", "path", p, "err", err)
		}
	}
}
