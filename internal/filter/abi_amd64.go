package filter

// HostABIs are the ABIs a process on this architecture can use. Anything else is killed.
var HostABIs = []*ABI{X86_64, I386}
