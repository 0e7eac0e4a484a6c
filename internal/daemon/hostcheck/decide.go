package hostcheck

import (
	"fmt"
	"strings"
)

// decideVMM picks the VMM from the preference and the findings. A
// configured VMM is always honoured; when it cannot run, the findings
// that stop it turn to fail so that the report fails. Under auto, banger
// prefers Firecracker, then QEMU, and fails only when neither can run.
func decideVMM(pref string, kvm, fc, qemu *finding) (Choice, string) {
	fcOK := kvm.usable && fc.usable
	accel := AccelTCG
	if kvm.usable {
		accel = AccelKVM
	}
	switch pref {
	case VMMFirecracker:
		if fcOK {
			return Choice{VMMFirecracker, "configured (vmm = firecracker); /dev/kvm works and firecracker is installed"}, AccelKVM
		}
		return Choice{VMMFirecracker, "configured (vmm = firecracker), but it cannot run: " + failAll(kvm, fc)}, AccelKVM
	case VMMQEMU:
		if qemu.usable {
			return Choice{VMMQEMU, "configured (vmm = qemu): " + qemuHow(kvm)}, accel
		}
		return Choice{VMMQEMU, "configured (vmm = qemu), but it cannot run: " + failAll(qemu)}, accel
	}
	note := ""
	if pref != "" && pref != Auto {
		note = fmt.Sprintf("unknown vmm preference %q, deciding as for auto: ", pref)
	}
	if fcOK {
		return Choice{VMMFirecracker, note + "/dev/kvm works and firecracker is installed"}, AccelKVM
	}
	// Only the reasons that stop Firecracker are worth saying.
	why := reasons(kvm, fc)
	if qemu.usable {
		return Choice{VMMQEMU, note + why + ": " + qemuHow(kvm)}, accel
	}
	return Choice{VMMNone, note + "no VMM can run guests: " + why + "; " + failAll(qemu)}, ""
}

func qemuHow(kvm *finding) string {
	if kvm.usable {
		return "QEMU microvm under KVM"
	}
	return "QEMU microvm under TCG (software emulation, slow)"
}

// decideDisk picks the copy-on-write strategy for VM disks, honouring a
// configured one the same way decideVMM does. Under auto it prefers
// device-mapper snapshots, then reflink clones, then sparse copies, which
// always work.
func decideDisk(pref string, dm, loop, reflink *finding) Choice {
	dmOK := dm.usable && loop.usable
	switch pref {
	case DiskDMSnap:
		if dmOK {
			relax(reflink)
			return Choice{DiskDMSnap, "configured (disk = dmsnap); device-mapper snapshots over loop devices work"}
		}
		return Choice{DiskDMSnap, "configured (disk = dmsnap), but it cannot work: " + failAll(dm, loop)}
	case DiskReflink:
		if reflink.usable {
			return Choice{DiskReflink, "configured (disk = reflink); the state root's filesystem clones with FICLONE"}
		}
		return Choice{DiskReflink, "configured (disk = reflink), but it cannot work: " + failAll(reflink)}
	case DiskCopy:
		return Choice{DiskCopy, "configured (disk = copy): each VM disk is a sparse copy of its image"}
	}
	note := ""
	if pref != "" && pref != Auto {
		note = fmt.Sprintf("unknown disk preference %q, deciding as for auto: ", pref)
	}
	switch {
	case dmOK:
		relax(reflink)
		return Choice{DiskDMSnap, note + "device-mapper snapshots over loop devices: VM disks are instant and share the image's blocks"}
	case reflink.usable:
		return Choice{DiskReflink, note + reasons(dm, loop) + ": reflink clones, instant and sharing the image's blocks"}
	}
	return Choice{DiskCopy, note + reasons(dm, loop, reflink) + ": sparse copies, each VM disk copies its image's data"}
}

// relax turns a finding that does not matter for the chosen strategy
// back to ok, keeping what was found.
func relax(f *finding) {
	if f.usable || f.Status != StatusWarn {
		return
	}
	f.Status = StatusOK
	f.Detail = f.reason + " (not needed: device-mapper snapshots are used)"
	f.Fix = ""
}

// reasons joins the reasons of the unusable findings.
func reasons(fs ...*finding) string {
	var rs []string
	for _, f := range fs {
		if !f.usable {
			rs = append(rs, f.reason)
		}
	}
	return strings.Join(rs, "; ")
}

// failAll marks every unusable finding failed and returns their reasons.
func failAll(fs ...*finding) string {
	for _, f := range fs {
		if !f.usable {
			f.Status = StatusFail
		}
	}
	return reasons(fs...)
}
