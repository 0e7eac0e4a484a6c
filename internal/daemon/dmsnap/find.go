package dmsnap

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"banger/internal/errdefs"
)

// Find rediscovers the objects Create made for spec.VMID, for
// reconciliation at start-up. The snapshot is found by its name and gives
// its two loops (by device number); when it is gone, leftover loops are
// found by their backing files: the one backed by spec.COW, and a
// read-only one backed by spec.Image that no device-mapper table uses.
// found is false when nothing is left. Image loops are shared by nobody
// but look alike for every VM of one image, so call Find before any
// Create runs: a Create between its losetup and its dmsetup would have its
// image loop taken for a leftover.
func Find(ctx context.Context, r Runner, spec Spec) (h Handles, found bool, err error) {
	if err := validVMID(spec.VMID); err != nil {
		return Handles{}, false, err
	}
	h = Handles{VMID: spec.VMID, Image: absPath(spec.Image), COW: absPath(spec.COW)}
	name := DMName(spec.VMID)
	out, err := r.Run(ctx, "dmsetup", "table", name)
	dmFound := err == nil
	if err != nil && !isGone(err) {
		return Handles{}, false, fmt.Errorf("dmsnap %s: read table of %s: %w", spec.VMID, name, err)
	}
	loops, err := listLoops(ctx, r)
	if err != nil {
		return Handles{}, false, fmt.Errorf("dmsnap %s: list loop devices: %w", spec.VMID, err)
	}

	if dmFound {
		origin, cow, ok := parseSnapshotTable(string(out))
		if !ok {
			return Handles{}, false, fmt.Errorf("dmsnap %s: %s exists but is not a snapshot (table %q): %w", spec.VMID, name, strings.TrimSpace(string(out)), errdefs.ErrFailedPrecondition)
		}
		h.DMName, h.Device = name, DevicePath(spec.VMID)
		if l, ok := loopByDevno(loops, origin); ok {
			h.OriginLoop, h.Image = l.Name, l.BackFile
		}
		if l, ok := loopByDevno(loops, cow); ok {
			h.COWLoop, h.COW = l.Name, l.BackFile
		}
		return h, true, nil
	}

	for _, l := range loops {
		if h.COW != "" && l.BackFile == h.COW && h.COWLoop == "" {
			h.COWLoop = l.Name
		}
	}
	var candidates []loopDev
	for _, l := range loops {
		if h.Image != "" && l.BackFile == h.Image && l.ReadOnly {
			candidates = append(candidates, l)
		}
	}
	if len(candidates) > 0 {
		held, err := heldDevices(ctx, r)
		if err != nil {
			return Handles{}, false, fmt.Errorf("dmsnap %s: list device-mapper tables: %w", spec.VMID, err)
		}
		for _, l := range candidates {
			if !held[l.Devno] {
				h.OriginLoop = l.Name
				break
			}
		}
	}
	return h, h.OriginLoop != "" || h.COWLoop != "", nil
}

// loopDev is one row of `losetup --list --json`.
type loopDev struct {
	Name     string // /dev/loop3
	Devno    string // "7:3"
	ReadOnly bool
	BackFile string // without losetup's " (deleted)" suffix
}

// listLoops lists the attached loop devices.
func listLoops(ctx context.Context, r Runner) ([]loopDev, error) {
	out, err := r.Run(ctx, "losetup", "--list", "--json", "--output", "NAME,MAJ:MIN,RO,BACK-FILE")
	if err != nil {
		return nil, err
	}
	return parseLoops(out)
}

// parseLoops reads losetup's JSON. util-linux prints nothing at all when
// no loop is attached, and older versions print "ro" as "0"/"1".
func parseLoops(out []byte) ([]loopDev, error) {
	if strings.TrimSpace(string(out)) == "" {
		return nil, nil
	}
	var doc struct {
		Loops []struct {
			Name     string          `json:"name"`
			Devno    string          `json:"maj:min"`
			RO       json.RawMessage `json:"ro"`
			BackFile string          `json:"back-file"`
		} `json:"loopdevices"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		return nil, fmt.Errorf("parse losetup --json output: %w", err)
	}
	loops := make([]loopDev, 0, len(doc.Loops))
	for _, l := range doc.Loops {
		ro := strings.Trim(string(l.RO), `"`)
		loops = append(loops, loopDev{
			Name:     l.Name,
			Devno:    strings.TrimSpace(l.Devno),
			ReadOnly: ro == "true" || ro == "1",
			BackFile: strings.TrimSuffix(l.BackFile, " (deleted)"),
		})
	}
	return loops, nil
}

func loopByDevno(loops []loopDev, devno string) (loopDev, bool) {
	for _, l := range loops {
		if l.Devno == devno {
			return l, true
		}
	}
	return loopDev{}, false
}

// parseSnapshotTable reads `dmsetup table NAME` of a snapshot,
// "0 16384 snapshot 7:0 7:1 P 8", and returns its origin and COW device
// numbers.
func parseSnapshotTable(table string) (origin, cow string, ok bool) {
	table = strings.TrimSpace(table)
	f := strings.Fields(table)
	if len(f) < 5 || f[2] != "snapshot" || strings.Contains(table, "\n") {
		return "", "", false
	}
	return f[3], f[4], true
}

var devnoRE = regexp.MustCompile(`^[0-9]+:[0-9]+$`)

// heldDevices returns the device numbers some device-mapper table uses,
// from `dmsetup table` over every device ("NAME: 0 16384 snapshot 7:0 7:1
// P 8" per line, or "No devices found").
func heldDevices(ctx context.Context, r Runner) (map[string]bool, error) {
	out, err := r.Run(ctx, "dmsetup", "table")
	if err != nil {
		return nil, err
	}
	held := map[string]bool{}
	for line := range strings.Lines(string(out)) {
		_, table, ok := strings.Cut(line, ": ")
		if !ok {
			continue
		}
		for _, f := range strings.Fields(table) {
			if devnoRE.MatchString(f) {
				held[f] = true
			}
		}
	}
	return held, nil
}
