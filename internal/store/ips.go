package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// IPAllocation is a guest IP on the bridge, held by one VM. Deleting the VM
// releases it.
type IPAllocation struct {
	IP          string // canonical form, e.g. "172.30.0.7"
	VMID        string
	AllocatedAt time.Time
}

const ipCols = `ip, vm_id, allocated_at`

func scanIP(r rowScanner) (IPAllocation, error) {
	var a IPAllocation
	err := r.Scan(&a.IP, &a.VMID, timeScan{&a.AllocatedAt})
	return a, err
}

// AllocateIP records that VM vmID holds ip. The daemon picks the address
// (under its createVMMu); the store guarantees no two VMs get the same one.
// An IP held by another VM, or a VM that already has one, is
// ErrAlreadyExists; an unknown VM is ErrNotFound; an unparsable IP is
// ErrInvalidArgument.
func (q *queries) AllocateIP(ctx context.Context, vmID, ip string) error {
	addr, err := netip.ParseAddr(ip)
	if err != nil || addr.Zone() != "" {
		return fmt.Errorf("allocate ip %q: %w: not an IP address", ip, ErrInvalidArgument)
	}
	ip = addr.Unmap().String()
	_, err = q.w.ExecContext(ctx,
		`INSERT INTO ip_allocations (ip, vm_id, allocated_at) VALUES (?, ?, ?)`,
		ip, vmID, encodeTime(q.now()))
	if col, ok := uniqueViolation(err); ok {
		if col == "ip_allocations.vm_id" {
			if have, gerr := q.GetIPAllocation(ctx, vmID); gerr == nil {
				return fmt.Errorf("vm %q: ip: %w (it has %s)", vmID, ErrAlreadyExists, have.IP)
			}
			return fmt.Errorf("vm %q: ip: %w", vmID, ErrAlreadyExists)
		}
		var holder string
		if qerr := q.r.QueryRowContext(ctx,
			`SELECT v.name FROM ip_allocations a JOIN vms v ON v.id = a.vm_id WHERE a.ip = ?`, ip,
		).Scan(&holder); qerr == nil {
			return fmt.Errorf("ip %s: %w (allocated to vm %q)", ip, ErrAlreadyExists, holder)
		}
		return fmt.Errorf("ip %s: %w", ip, ErrAlreadyExists)
	}
	if isForeignKeyViolation(err) {
		return fmt.Errorf("allocate ip %s: vm %q: %w", ip, vmID, ErrNotFound)
	}
	if err != nil {
		return invalidValue(fmt.Sprintf("allocate ip %s to vm %q", ip, vmID), err)
	}
	return nil
}

// GetIPAllocation returns the IP VM vmID holds.
func (q *queries) GetIPAllocation(ctx context.Context, vmID string) (IPAllocation, error) {
	a, err := scanIP(q.r.QueryRowContext(ctx,
		`SELECT `+ipCols+` FROM ip_allocations WHERE vm_id = ?`, vmID))
	if errors.Is(err, sql.ErrNoRows) {
		return IPAllocation{}, fmt.Errorf("ip of vm %q: %w", vmID, ErrNotFound)
	}
	if err != nil {
		return IPAllocation{}, fmt.Errorf("get ip of vm %q: %w", vmID, err)
	}
	return a, nil
}

// ReleaseIP frees the IP VM vmID holds. A VM holding none is ErrNotFound
// (cleanup paths may ignore it).
func (q *queries) ReleaseIP(ctx context.Context, vmID string) error {
	res, err := q.w.ExecContext(ctx, `DELETE FROM ip_allocations WHERE vm_id = ?`, vmID)
	if err != nil {
		return fmt.Errorf("release ip of vm %q: %w", vmID, err)
	}
	return mustAffect(res, "ip of vm", vmID)
}

// ListIPAllocations returns every allocation, ordered by VM ID. (Text
// order, not numeric: callers that walk the subnet build a set.)
func (q *queries) ListIPAllocations(ctx context.Context) ([]IPAllocation, error) {
	rows, err := q.r.QueryContext(ctx, `SELECT `+ipCols+` FROM ip_allocations ORDER BY vm_id`)
	if err != nil {
		return nil, fmt.Errorf("list ip allocations: %w", err)
	}
	defer rows.Close()
	var out []IPAllocation
	for rows.Next() {
		a, err := scanIP(rows)
		if err != nil {
			return nil, fmt.Errorf("list ip allocations: %w", err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list ip allocations: %w", err)
	}
	return out, nil
}
