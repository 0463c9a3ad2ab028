package filter

// HostABIs are the ABIs a process on this architecture can use. AArch32 (compat) tasks are not
// served and are killed by the filter.
var HostABIs = []*ABI{AArch64}
