package vmnet

// Firewall installs and removes banger's nftables table in one network
// namespace. The table is the unit: banger owns it whole, so installing
// is replacing and removing is deleting, and the reconciler finds
// banger's rules by the table's name (every rule also carries a
// "banger: ..." comment).
type Firewall interface {
	// Apply makes the table exactly rs, atomically (one transaction: a
	// reader sees the old table or the new one, never a mix or none).
	// Applying the same ruleset again changes nothing.
	Apply(rs Ruleset) error
	// Remove deletes the table; ErrTableNotFound if it is not there.
	Remove(table string) error
	// Has reports whether the table is installed.
	Has(table string) (bool, error)
}
