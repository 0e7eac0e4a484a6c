package fakevmm

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The fault knobs, read from the environment at start (qemu.Start passes
// the daemon's environment on). With EnvKnobsDir set, the file DIR/ID (ID
// the VM's id), if it exists, holds KEY=VALUE lines that override the
// environment for that VM only, so a test can fault one VM of a running
// daemon. An unknown FAKEVMM_* name or a malformed value makes the fake
// exit 1 at start.
const (
	// EnvBootDelay is a duration from start to the guest's host key on the
	// console and SSH (QMP answers at once, as QEMU's does).
	EnvBootDelay = "FAKEVMM_BOOT_DELAY"
	// EnvNoBoot=1: the guest never boots (no host key, no SSH); QMP works.
	EnvNoBoot = "FAKEVMM_NO_BOOT"
	// EnvExitAfter is a duration after the boot at which the guest powers
	// off by itself (exit 0, as after `poweroff` in the guest).
	EnvExitAfter = "FAKEVMM_EXIT_AFTER"
	// EnvHangPowerdown=1: the guest ignores ctrl-alt-delete (QMP
	// send-key) and system_powerdown; qemu.Shutdown then sends quit.
	EnvHangPowerdown = "FAKEVMM_HANG_POWERDOWN"
	// EnvHangQuit=1: QMP quit is answered but does nothing; qemu.Shutdown
	// then sends SIGKILL.
	EnvHangQuit = "FAKEVMM_HANG_QUIT"
	// EnvKnobsDir names a directory of per-VM knob files (see above).
	EnvKnobsDir = "FAKEVMM_KNOBS_DIR"
)

// Knobs are the fault knobs in effect for one run.
type Knobs struct {
	BootDelay     time.Duration
	NoBoot        bool
	ExitAfter     time.Duration
	HangPowerdown bool
	HangQuit      bool
}

// readKnobs reads the knobs for VM id from environ and the knobs dir.
func readKnobs(environ []string, id string) (Knobs, error) {
	vals := map[string]string{}
	for _, e := range environ {
		k, v, _ := strings.Cut(e, "=")
		if strings.HasPrefix(k, "FAKEVMM_") {
			vals[k] = v
		}
	}
	if dir := vals[EnvKnobsDir]; dir != "" {
		data, err := os.ReadFile(filepath.Join(dir, id))
		if err != nil && !os.IsNotExist(err) {
			return Knobs{}, fmt.Errorf("%s: %w", EnvKnobsDir, err)
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			k, v, ok := strings.Cut(line, "=")
			if !ok || !strings.HasPrefix(k, "FAKEVMM_") || k == EnvKnobsDir {
				return Knobs{}, fmt.Errorf("%s: line %q: want FAKEVMM_NAME=VALUE", filepath.Join(dir, id), line)
			}
			vals[k] = v
		}
	}
	var kn Knobs
	for k, v := range vals {
		var err error
		switch k {
		case EnvBootDelay:
			kn.BootDelay, err = parseDuration(v)
		case EnvExitAfter:
			kn.ExitAfter, err = parseDuration(v)
		case EnvNoBoot:
			kn.NoBoot, err = parseFlag(v)
		case EnvHangPowerdown:
			kn.HangPowerdown, err = parseFlag(v)
		case EnvHangQuit:
			kn.HangQuit, err = parseFlag(v)
		case EnvKnobsDir:
		default:
			err = fmt.Errorf("unknown knob (fakevmm knows %s, %s, %s, %s, %s, %s)",
				EnvBootDelay, EnvNoBoot, EnvExitAfter, EnvHangPowerdown, EnvHangQuit, EnvKnobsDir)
		}
		if err != nil {
			return Knobs{}, fmt.Errorf("%s=%s: %w", k, v, err)
		}
	}
	return kn, nil
}

func parseDuration(v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err == nil && d < 0 {
		err = fmt.Errorf("negative duration")
	}
	return d, err
}

func parseFlag(v string) (bool, error) {
	switch v {
	case "", "0":
		return false, nil
	case "1":
		return true, nil
	}
	return false, fmt.Errorf("want 0 or 1")
}
