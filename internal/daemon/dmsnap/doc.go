// Package dmsnap gives a VM a copy-on-write disk as a device-mapper
// snapshot over two loop devices: the image (a read-only raw ext4 file)
// and a per-VM COW file. Every host object is named after the VM id: the
// device-mapper device is banger-<vmid>, so it is found again after a
// daemon restart; the loop devices are found by their backing files.
//
// Every host command goes through a Runner (argv only):
//
//	Create   losetup --find --show --read-only IMAGE     -> origin loop
//	         losetup --find --show COW                   -> COW loop
//	         blockdev --getsz ORIGIN                     -> sectors
//	         dmsetup create banger-<vmid> --table "0 <sectors> snapshot ORIGIN COW P 8"
//	Cleanup  dmsetup remove --retry banger-<vmid>
//	         losetup --list --json --output NAME,MAJ:MIN,RO,BACK-FILE
//	         losetup -d ORIGIN
//	         losetup -d COW
//	Find     dmsetup table banger-<vmid>
//	         losetup --list --json --output NAME,MAJ:MIN,RO,BACK-FILE
//	         (dmsetup table, all devices, only when banger-<vmid> is gone)
//
// Decisions:
//
//   - Persistent (P), not transient (N). A transient snapshot keeps its
//     exception table in kernel memory only, so the VM's writes are lost
//     the moment the device is removed: at every stop, daemon crash
//     cleanup or host reboot. A persistent one writes the table into the
//     COW file itself, so re-creating banger-<vmid> over the same image and
//     COW file (Create again) brings the VM's disk back as it was. A fresh
//     sparse COW file reads as zeros, which the kernel takes as "no store
//     yet" and initialises.
//   - Chunk size 8 sectors (4 KiB): the ext4 block size, so a guest write
//     of one block copies one block, not 64 KiB.
//   - The snapshot is exactly the image's size (blockdev --getsz of the
//     origin loop). A VM disk bigger than its image would need a second
//     target (a linear or zero extension the snapshot cannot provide) and
//     a resize2fs inside the guest's file system; growing a dmsnap disk is
//     a later issue. The COW file must still hold every chunk the guest may
//     write plus the store's metadata, or the snapshot becomes invalid when
//     it fills: MinCOWSize says how big, MakeCOW makes one.
//   - The origin is a plain read-only loop, with no snapshot-origin target
//     on top: nothing ever writes the image, so no other snapshot of it
//     needs its chunks copied first. Each VM gets its own origin loop even
//     when VMs share an image; one shared loop would need a reference
//     count across VMs and daemon restarts for one loop device saved.
//
// Loop device names are only meaningful until the loop is detached:
// after a reboot or a crash /dev/loop3 may back another file. Cleanup
// therefore detaches a loop only while it is still backed by the file the
// Handles name, and reconciliation should rebuild Handles with Find
// rather than trust ones saved before.
package dmsnap
