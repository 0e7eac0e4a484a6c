package qemu

import (
	"fmt"
	"strconv"
	"strings"
)

// namePrefix marks a QEMU process as banger's: -name guest=banger-ID.
const namePrefix = "banger-"

// machine is the microvm machine as guest-boot.md measured it: no option
// ROMs (the kernel is loaded directly), an ISA serial port for ttyS0, and
// ACPI on (the default), through which the guest kernel finds the
// virtio-mmio devices.
const machine = "microvm,x-option-roms=off,isa-serial=on"

// BaseCmdline is the part of the kernel command line every banger guest
// under QEMU needs: the console on the serial port, no reboot delay after
// a panic (with -no-reboot QEMU then exits) and a reboot through the
// keyboard controller (which QEMU turns into an exit as well). Append
// root=, init= and the guest's own settings; Argv adds tsc_early_khz under
// TCG.
func BaseCmdline() string {
	return "console=ttyS0 reboot=k panic=-1"
}

// Argv returns the command that starts cfg: QEMU's argv, wrapped in
// nsenter when cfg.NetNS is set. It only validates cfg and never looks at
// the host, so cfg.Accel must be set and, under TCG, cfg.TSCkHz too unless
// cfg.Cmdline already carries tsc_early_khz=.
func Argv(cfg Config) ([]string, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cmdline, err := kernelCmdline(cfg)
	if err != nil {
		return nil, err
	}

	var argv []string
	if cfg.NetNS != "" {
		argv = append(argv, "nsenter", "--net="+netNSPath(cfg.NetNS), "--")
	}
	argv = append(argv, cfg.Binary,
		"-name", "guest="+namePrefix+cfg.ID,
		"-M", machine,
	)
	switch cfg.Accel {
	case AccelKVM:
		argv = append(argv, "-accel", "kvm", "-cpu", "host")
	case AccelTCG:
		argv = append(argv, "-accel", "tcg,thread=multi", "-cpu", "max")
	}
	argv = append(argv,
		"-smp", strconv.Itoa(cfg.VCPUs),
		"-m", strconv.Itoa(cfg.MemoryMiB)+"M",
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		// The keyboard controller QMP send-key presses ctrl-alt-delete on.
		"-device", "i8042",
		"-kernel", cfg.Kernel,
	)
	if cfg.Initrd != "" {
		argv = append(argv, "-initrd", cfg.Initrd)
	}
	argv = append(argv, "-append", cmdline)
	for i, d := range cfg.Disks {
		drive := fmt.Sprintf("id=disk%d,if=none,format=raw,file=%s", i, optValue(d.Path))
		if d.ReadOnly {
			drive += ",readonly=on"
		}
		argv = append(argv, "-drive", drive, "-device", fmt.Sprintf("virtio-blk-device,drive=disk%d", i))
	}
	fd := 3 // the NICs' Files follow stdin, stdout and stderr (Start's ExtraFiles)
	for i, n := range cfg.NICs {
		netdev := fmt.Sprintf("tap,id=net%d,ifname=%s,script=no,downscript=no", i, n.TAP)
		if n.File != nil {
			netdev = fmt.Sprintf("tap,id=net%d,fd=%d", i, fd)
			fd++
		}
		argv = append(argv,
			"-netdev", netdev,
			"-device", fmt.Sprintf("virtio-net-device,netdev=net%d,mac=%s", i, strings.ToLower(n.MAC)))
	}
	if cfg.ConsoleLog != "" {
		argv = append(argv, "-chardev", "file,id=console,path="+optValue(cfg.ConsoleLog), "-serial", "chardev:console")
	} else {
		argv = append(argv, "-serial", "null")
	}
	argv = append(argv,
		"-chardev", "socket,id=qmp,path="+optValue(cfg.QMPSocket)+",server=on,wait=off",
		"-mon", "chardev=qmp,mode=control")
	if cfg.PIDFile != "" {
		argv = append(argv, "-pidfile", cfg.PIDFile)
	}
	return argv, nil
}

// kernelCmdline is cfg.Cmdline with tsc_early_khz= added under TCG (before
// a "--", after which parameters go to init, not the kernel).
func kernelCmdline(cfg Config) (string, error) {
	cmdline := strings.TrimSpace(cfg.Cmdline)
	kernelPart, initPart := splitInitArgs(cmdline)
	if cfg.Accel == AccelTCG && !hasParam(kernelPart, "tsc_early_khz") {
		if cfg.TSCkHz <= 0 {
			return "", invalid(cfg.ID, "under TCG the guest needs tsc_early_khz= (its timer calibration can hang without it): set TSCkHz, or use Start, which reads it from the host")
		}
		kernelPart = strings.TrimSpace(kernelPart + " tsc_early_khz=" + strconv.FormatInt(cfg.TSCkHz, 10))
		cmdline = kernelPart
		if initPart != "" {
			cmdline += " " + initPart
		}
	}
	if len(cmdline) > maxCmdline {
		return "", invalid(cfg.ID, "the kernel command line is %d bytes, more than the kernel takes (%d)", len(cmdline), maxCmdline)
	}
	return cmdline, nil
}

// splitInitArgs splits a kernel command line at its first bare "--" token
// (outside double quotes, as the kernel parses it): initPart starts with
// the "--" and is empty when there is none.
func splitInitArgs(cmdline string) (kernelPart, initPart string) {
	inQuote := false
	for i := 0; i < len(cmdline); i++ {
		switch c := cmdline[i]; {
		case c == '"':
			inQuote = !inQuote
		case !inQuote && c == '-' && strings.HasPrefix(cmdline[i:], "--") &&
			(i == 0 || cmdline[i-1] == ' ' || cmdline[i-1] == '\t') &&
			(i+2 == len(cmdline) || cmdline[i+2] == ' ' || cmdline[i+2] == '\t'):
			return strings.TrimSpace(cmdline[:i]), cmdline[i:]
		}
	}
	return cmdline, ""
}

// hasParam reports whether a kernel command line sets the parameter key
// (key=...). Quoted values are not parsed: a key inside one is a false
// positive only for values that look like " key=".
func hasParam(cmdline, key string) bool {
	for _, f := range strings.Fields(cmdline) {
		if k, _, _ := strings.Cut(f, "="); k == key {
			return true
		}
	}
	return false
}

// optValue escapes a value inside a QEMU "key=value,..." option string,
// where a literal comma is written twice.
func optValue(s string) string {
	return strings.ReplaceAll(s, ",", ",,")
}

// IDFromArgv returns the VM id a banger QEMU process runs, given its argv
// (for example /proc/PID/cmdline split at NULs), and false when argv is not
// one Argv made.
func IDFromArgv(argv []string) (string, bool) {
	for i := 0; i+1 < len(argv); i++ {
		if argv[i] != "-name" {
			continue
		}
		for _, kv := range strings.Split(argv[i+1], ",") {
			if v, ok := strings.CutPrefix(kv, "guest="+namePrefix); ok && idPattern.MatchString(v) {
				return v, true
			}
		}
		return "", false
	}
	return "", false
}
