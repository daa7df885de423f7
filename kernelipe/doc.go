// Package kernelipe drives the Linux kernel's own IPE LSM (in-tree IPE, 6.12
// and later): it signs policies the way IPE requires, loads, updates,
// activates and deletes them through securityfs, flips the enforce and
// success_audit switches, and reads IPE's audit records from the audit
// netlink socket.
//
// bpfipe uses it to compare itself with the kernel: the records read here
// decode into loader.AccessRecord, the type bpfipe's own events use, so the
// two compare field by field.
//
// Every securityfs failure is an *Error naming what the kernel's errno means
// for that operation (ENOKEY: the signer is not trusted; ESTALE: the version
// is not newer; ...), as the kernel's admin guide documents them.
package kernelipe
