package fakevmm

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"

	"banger/internal/daemon/qemu"
	"banger/internal/guestinit"
)

// Config is what the fake took from its command line.
type Config struct {
	// ID is the VM id of -name guest=banger-ID.
	ID string
	// Kernel, Initrd: the -kernel and -initrd files (opened, never read).
	Kernel, Initrd string
	// Cmdline is -append; Addr and AuthKeys come from its banger.ip and
	// banger.authkey parameters, Hostname from banger.hostname.
	Cmdline  string
	Addr     netip.Prefix
	AuthKeys []ssh.PublicKey
	Hostname string
	// Disks are the -drive files, in order.
	Disks []Disk
	// NICs are the TAPs of the -netdev tap backends a virtio-net-device
	// uses, in -device order.
	NICs []NIC
	// Console is the file the serial port writes to; "" for -serial null.
	Console string
	// QMPSocket is the path of the socket chardev -mon uses.
	QMPSocket string
	// PIDFile is -pidfile's file, or "".
	PIDFile string
}

// Disk is one -drive.
type Disk struct {
	ID, Path string
	ReadOnly bool
}

// NIC is one virtio-net-device on a TAP.
type NIC struct {
	TAP string
	MAC net.HardwareAddr
}

// usageError is a refusal of the command line: QEMU prints such errors as
// "PROG: -option: message" and exits 1.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// The options the fake knows: those qemu.Argv emits (and -machine, the
// long spelling of -M). true: the option takes an argument.
var options = map[string]bool{
	"name": true, "M": true, "machine": true, "accel": true, "cpu": true,
	"smp": true, "m": true, "display": true, "device": true, "kernel": true,
	"initrd": true, "append": true, "drive": true, "netdev": true,
	"chardev": true, "serial": true, "mon": true, "pidfile": true,
	"nodefaults": false, "no-user-config": false, "no-reboot": false,
}

// repeatable options may be given more than once; the fake refuses a
// repeated single-valued one (QEMU would take the last, but banger's argv
// never repeats one, so a repeat is a bug in it).
var repeatable = map[string]bool{"device": true, "drive": true, "netdev": true, "chardev": true}

// kv is one key=value of a QEMU option string.
type kv struct{ k, v string }

// opts is a parsed QEMU option string ("tap,id=net0,ifname=x").
type opts []kv

func (o opts) get(k string) (string, bool) {
	for _, p := range o {
		if p.k == k {
			return p.v, true
		}
	}
	return "", false
}

// only fails unless every key of o is one of keys.
func (o opts) only(opt string, keys ...string) error {
	for _, p := range o {
		ok := false
		for _, k := range keys {
			ok = ok || p.k == k
		}
		if !ok {
			return usagef("-%s: Invalid parameter '%s'", opt, p.k)
		}
	}
	return nil
}

// parseOpts splits a QEMU option string at its commas (",," is a literal
// comma). A first element without '=' is the value of implied, when the
// option has an implied key ("tap" for -netdev's type).
func parseOpts(s, implied string) (opts, error) {
	var parts []string
	var cur strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == ',' {
			if i+1 < len(s) && s[i+1] == ',' {
				cur.WriteByte(',')
				i++
				continue
			}
			parts = append(parts, cur.String())
			cur.Reset()
			continue
		}
		cur.WriteByte(s[i])
	}
	parts = append(parts, cur.String())
	var out opts
	for i, p := range parts {
		k, v, ok := strings.Cut(p, "=")
		switch {
		case !ok && i == 0 && implied != "":
			out = append(out, kv{implied, p})
		case !ok:
			return nil, fmt.Errorf("parameter '%s' has no value", p)
		default:
			if _, dup := out.get(k); dup {
				return nil, fmt.Errorf("parameter '%s' given twice", k)
			}
			out = append(out, kv{k, v})
		}
	}
	return out, nil
}

// parseArgv reads QEMU's command line (without argv[0]) as qemu.Argv
// writes it. It refuses what it does not know and what it needs but
// misses.
func parseArgv(args []string) (Config, error) {
	var cfg Config
	seen := map[string]int{}
	type chardev struct{ backend, path string }
	chardevs := map[string]chardev{}
	drives := map[string]Disk{}
	taps := map[string]string{}
	var devices, serials, mons []string
	var machine, accel, display string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") || a == "-" {
			return cfg, usagef("%s: positional arguments (a disk image for QEMU) are not supported by fakevmm", a)
		}
		name := strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		hasArg, known := options[name]
		if !known {
			return cfg, usagef("%s: invalid option", a)
		}
		if name == "machine" {
			name = "M"
		}
		seen[name]++
		if seen[name] > 1 && !repeatable[name] {
			return cfg, usagef("-%s given twice (QEMU would take the last; banger's argv never repeats it)", name)
		}
		if !hasArg {
			continue
		}
		if i+1 >= len(args) {
			return cfg, usagef("%s: requires an argument", a)
		}
		i++
		val := args[i]
		var err error
		switch name {
		case "name":
			var o opts
			if o, err = parseOpts(val, "guest"); err == nil {
				err = o.only(name, "guest", "process", "debug-threads")
			}
			if err == nil {
				id, ok := qemu.IDFromArgv([]string{"-name", val})
				if !ok {
					err = usagef("-name %s: want guest=banger-ID (fakevmm runs banger's VMs only)", val)
				}
				cfg.ID = id
			}
		case "M":
			machine = val
		case "accel":
			accel = val
		case "cpu":
			if val == "" {
				err = usagef("-cpu: empty CPU model")
			}
		case "smp":
			if n, e := strconv.Atoi(val); e != nil || n < 1 || n > 255 {
				err = usagef("-smp %s: want a vCPU count 1-255 (fakevmm takes no topology)", val)
			}
		case "m":
			num, ok := strings.CutSuffix(val, "M")
			if n, e := strconv.Atoi(num); !ok || e != nil || n < 16 {
				err = usagef("-m %s: want NM with N at least 16 (fakevmm takes no other form)", val)
			}
		case "display":
			display = val
		case "kernel":
			cfg.Kernel = val
		case "initrd":
			cfg.Initrd = val
		case "append":
			cfg.Cmdline = val
		case "pidfile":
			cfg.PIDFile = val
		case "device":
			devices = append(devices, val)
		case "serial":
			serials = append(serials, val)
		case "mon":
			mons = append(mons, val)
		case "chardev":
			var o opts
			if o, err = parseOpts(val, "backend"); err != nil {
				break
			}
			id, _ := o.get("id")
			backend, _ := o.get("backend")
			path, _ := o.get("path")
			switch {
			case id == "":
				err = usagef("-chardev %s: Parameter 'id' is missing", val)
			case chardevs[id] != (chardev{}):
				err = usagef("-chardev %s: attempt to add duplicate property 'id'", val)
			case path == "":
				err = usagef("-chardev %s: chardev: \"%s\" missing path", val, id)
			case backend == "file":
				err = o.only(name, "backend", "id", "path")
			case backend == "socket":
				if err = o.only(name, "backend", "id", "path", "server", "wait"); err == nil {
					server, _ := o.get("server")
					wait, _ := o.get("wait")
					if server != "on" || wait != "off" {
						err = usagef("-chardev %s: fakevmm serves a socket chardev only with server=on,wait=off", val)
					}
				}
			default:
				err = usagef("-chardev %s: fakevmm has no chardev backend %q", val, backend)
			}
			if err == nil {
				chardevs[id] = chardev{backend, path}
			}
		case "drive":
			var o opts
			if o, err = parseOpts(val, ""); err != nil {
				break
			}
			if err = o.only(name, "id", "if", "format", "file", "readonly"); err != nil {
				break
			}
			id, _ := o.get("id")
			file, _ := o.get("file")
			iface, _ := o.get("if")
			format, _ := o.get("format")
			ro, _ := o.get("readonly")
			switch {
			case id == "" || file == "":
				err = usagef("-drive %s: fakevmm needs id= and file=", val)
			case iface != "none" || format != "raw":
				err = usagef("-drive %s: fakevmm takes if=none,format=raw only", val)
			case ro != "" && ro != "on" && ro != "off":
				err = usagef("-drive %s: readonly: want on or off", val)
			case drives[id] != (Disk{}):
				err = usagef("-drive %s: Duplicate ID '%s' for drive", val, id)
			}
			if err == nil {
				drives[id] = Disk{ID: id, Path: file, ReadOnly: ro == "on"}
			}
		case "netdev":
			var o opts
			if o, err = parseOpts(val, "type"); err != nil {
				break
			}
			if err = o.only(name, "type", "id", "ifname", "script", "downscript"); err != nil {
				break
			}
			typ, _ := o.get("type")
			id, _ := o.get("id")
			ifname, _ := o.get("ifname")
			script, _ := o.get("script")
			down, _ := o.get("downscript")
			switch {
			case typ != "tap":
				err = usagef("-netdev %s: fakevmm has no netdev type %q", val, typ)
			case id == "" || ifname == "":
				err = usagef("-netdev %s: fakevmm needs id= and ifname= (it opens an existing TAP)", val)
			case script != "no" || down != "no":
				err = usagef("-netdev %s: fakevmm runs no scripts: want script=no,downscript=no", val)
			case taps[id] != "":
				err = usagef("-netdev %s: Duplicate ID '%s' for netdev", val, id)
			}
			if err == nil {
				taps[id] = ifname
			}
		}
		if err != nil {
			var ue *usageError
			if !errors.As(err, &ue) {
				err = usagef("-%s %s: %v", name, val, err)
			}
			return cfg, err
		}
	}

	for _, flag := range []string{"nodefaults", "no-user-config", "no-reboot", "name", "M", "accel", "kernel", "append", "display", "serial", "mon"} {
		if seen[flag] == 0 {
			return cfg, usagef("fakevmm needs -%s: banger's argv always has it", flag)
		}
	}
	if !strings.HasPrefix(machine, "microvm") {
		return cfg, usagef("-M %s: fakevmm emulates the microvm machine only", machine)
	}
	if a, _, _ := strings.Cut(accel, ","); a != qemu.AccelKVM && a != qemu.AccelTCG {
		return cfg, usagef("-accel %s: want kvm or tcg", accel)
	}
	if display != "none" {
		return cfg, usagef("-display %s: fakevmm has no display: want none", display)
	}

	// Devices: the keyboard controller, disks and NICs on the backends
	// defined above, each backend used once.
	used := map[string]bool{}
	for _, d := range devices {
		o, err := parseOpts(d, "driver")
		if err != nil {
			return cfg, usagef("-device %s: %v", d, err)
		}
		driver, _ := o.get("driver")
		switch driver {
		case "i8042":
			if err := o.only("device", "driver"); err != nil {
				return cfg, err
			}
		case "virtio-blk-device":
			if err := o.only("device", "driver", "drive"); err != nil {
				return cfg, err
			}
			id, _ := o.get("drive")
			disk, ok := drives[id]
			if !ok || used["drive:"+id] {
				return cfg, usagef("-device %s: Property 'virtio-blk-device.drive' can't find value '%s'", d, id)
			}
			used["drive:"+id] = true
			cfg.Disks = append(cfg.Disks, disk)
		case "virtio-net-device":
			if err := o.only("device", "driver", "netdev", "mac"); err != nil {
				return cfg, err
			}
			id, _ := o.get("netdev")
			tap, ok := taps[id]
			if !ok || used["netdev:"+id] {
				return cfg, usagef("-device %s: Property 'virtio-net-device.netdev' can't find value '%s'", d, id)
			}
			used["netdev:"+id] = true
			macStr, _ := o.get("mac")
			mac, err := net.ParseMAC(macStr)
			if err != nil || len(mac) != 6 || mac[0]&1 != 0 {
				return cfg, usagef("-device %s: Property 'virtio-net-device.mac' doesn't take value '%s'", d, macStr)
			}
			cfg.NICs = append(cfg.NICs, NIC{TAP: tap, MAC: mac})
		default:
			return cfg, usagef("-device %s: fakevmm has no device %q", d, driver)
		}
	}
	for id := range drives {
		if !used["drive:"+id] {
			return cfg, usagef("-drive id=%s: no virtio-blk-device uses it (QEMU would warn; banger's argv never does this)", id)
		}
	}
	for id := range taps {
		if !used["netdev:"+id] {
			return cfg, usagef("-netdev id=%s: no virtio-net-device uses it", id)
		}
	}
	if len(cfg.Disks) == 0 {
		return cfg, usagef("fakevmm needs a -drive and its virtio-blk-device: banger's guests boot from /dev/vda")
	}
	if len(cfg.NICs) == 0 {
		return cfg, usagef("fakevmm needs a -netdev tap and its virtio-net-device: the daemon reaches the guest over it")
	}

	// The serial port and the monitor, on the chardevs defined above.
	chardevUsed := map[string]bool{}
	for _, s := range serials {
		switch {
		case s == "null":
		case strings.HasPrefix(s, "file:"):
			cfg.Console = strings.TrimPrefix(s, "file:")
		case strings.HasPrefix(s, "chardev:"):
			id := strings.TrimPrefix(s, "chardev:")
			c, ok := chardevs[id]
			if !ok || chardevUsed[id] {
				return cfg, usagef("-serial %s: chardev '%s' not found or in use", s, id)
			}
			if c.backend != "file" {
				return cfg, usagef("-serial %s: fakevmm writes the console to a file chardev only", s)
			}
			chardevUsed[id] = true
			cfg.Console = c.path
		default:
			return cfg, usagef("-serial %s: fakevmm takes null, file:PATH or chardev:ID", s)
		}
	}
	if len(serials) > 1 {
		return cfg, usagef("-serial given %d times: microvm has one ISA serial port in banger's argv", len(serials))
	}
	for _, m := range mons {
		o, err := parseOpts(m, "chardev")
		if err != nil {
			return cfg, usagef("-mon %s: %v", m, err)
		}
		if err := o.only("mon", "chardev", "mode"); err != nil {
			return cfg, err
		}
		id, _ := o.get("chardev")
		mode, _ := o.get("mode")
		c, ok := chardevs[id]
		switch {
		case !ok || chardevUsed[id]:
			return cfg, usagef("-mon %s: chardev '%s' not found or in use", m, id)
		case mode != "control":
			return cfg, usagef("-mon %s: fakevmm serves QMP only: want mode=control", m)
		case c.backend != "socket":
			return cfg, usagef("-mon %s: fakevmm serves QMP on a socket chardev only", m)
		}
		chardevUsed[id] = true
		cfg.QMPSocket = c.path
	}
	if len(mons) > 1 {
		return cfg, usagef("-mon given %d times: fakevmm serves one QMP monitor", len(mons))
	}
	for id := range chardevs {
		if !chardevUsed[id] {
			return cfg, usagef("-chardev id=%s: nothing uses it", id)
		}
	}

	// The kernel command line: what the guest init needs.
	kernelPart, _, _ := strings.Cut(" "+cfg.Cmdline+" ", " -- ")
	if !strings.Contains(kernelPart, " console=ttyS0 ") {
		return cfg, usagef("-append %q: no console=ttyS0: the guest's markers would never reach the serial log", cfg.Cmdline)
	}
	gc, err := guestinit.ParseCmdline(cfg.Cmdline)
	if err != nil {
		return cfg, usagef("-append: the guest init would skip: %v", err)
	}
	if !gc.Address.IsValid() {
		return cfg, usagef("-append %q: no banger.ip=ADDR/BITS: fakevmm serves SSH on that address", cfg.Cmdline)
	}
	if len(gc.AuthorizedKeys) == 0 {
		return cfg, usagef("-append %q: no banger.authkey: the guest would refuse every SSH client", cfg.Cmdline)
	}
	cfg.Addr, cfg.AuthKeys, cfg.Hostname = gc.Address, gc.AuthorizedKeys, gc.Hostname
	return cfg, nil
}
