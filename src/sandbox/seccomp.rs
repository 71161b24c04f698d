//! Sandbox, system calls: the seccomp filters every sandboxed process runs under, for what namespaces and
//! Landlock do not cover — other processes' memory (ptrace, `process_vm_*`), `io_uring` (which bypasses
//! seccomp), `AF_VSOCK` (which leaves any network namespace), new namespaces and mounts, kernel modules and keys,
//! and every `socket()` when the network is off. Denied calls fail with `EPERM`; nothing is killed.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

const AF_VSOCK: u64 = 40;

/// Syscalls no worker, test or check needs, denied unconditionally.
const DENIED: &[i64] = &[
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_open_by_handle_at,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_fsopen,
    libc::SYS_fsmount,
    libc::SYS_fsconfig,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_keyctl,
    libc::SYS_userfaultfd,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_iopl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ioperm,
];

/// `clone` flags that make a new namespace.
const NAMESPACE_FLAGS: &[u64] = &[
    0x0002_0000, // CLONE_NEWNS
    0x0200_0000, // CLONE_NEWCGROUP
    0x0400_0000, // CLONE_NEWUTS
    0x0800_0000, // CLONE_NEWIPC
    0x1000_0000, // CLONE_NEWUSER
    0x2000_0000, // CLONE_NEWPID
    0x4000_0000, // CLONE_NEWNET
];

fn condition(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition, String> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value).map_err(|e| e.to_string())
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, String> {
    SeccompRule::new(conditions).map_err(|e| e.to_string())
}

/// The filters, in the order they are installed: the `EPERM` one, then one that answers `clone3` with `ENOSYS`
/// (its flags live in memory a filter cannot read; C libraries then fall back to `clone`, which is filtered).
pub fn programs(network: bool) -> Result<Vec<BpfProgram>, String> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| e.to_string())?;
    let mut denied: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|&call| (call, Vec::new())).collect();
    // With the network off, no socket at all: a read-only bind does not stop `connect()` to a host UNIX socket
    // (a Docker or agent socket anywhere on disk), so only `socketpair` is left for talking to children.
    let socket = if network {
        vec![rule(vec![condition(0, SeccompCmpOp::Eq, AF_VSOCK)?])?]
    } else {
        Vec::new()
    };
    denied.insert(libc::SYS_socket, socket);
    denied.insert(
        libc::SYS_clone,
        NAMESPACE_FLAGS
            .iter()
            .map(|&flag| rule(vec![condition(0, SeccompCmpOp::MaskedEq(flag), flag)?]))
            .collect::<Result<_, _>>()?,
    );
    let eperm = u32::try_from(libc::EPERM).unwrap_or(1);
    let enosys = u32::try_from(libc::ENOSYS).unwrap_or(38);
    let first = SeccompFilter::new(
        denied,
        SeccompAction::Allow,
        SeccompAction::Errno(eperm),
        arch,
    )
    .map_err(|e| e.to_string())?;
    let second = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(enosys),
        arch,
    )
    .map_err(|e| e.to_string())?;
    let mut programs: Vec<BpfProgram> = [first, second]
        .into_iter()
        .map(|filter| BpfProgram::try_from(filter).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    if cfg!(target_arch = "x86_64") {
        programs.insert(0, x32_guard(enosys));
    }
    Ok(programs)
}

/// On x86_64 the x32 ABI reaches the same system calls with bit 30 set in the number, under the same audit arch,
/// so a filter that names syscall numbers would let `unshare | 0x40000000` through: answer all of them `ENOSYS`.
fn x32_guard(enosys: u32) -> BpfProgram {
    const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
    const JGE_K: u16 = 0x35; // BPF_JMP | BPF_JGE | BPF_K
    const RET_K: u16 = 0x06; // BPF_RET | BPF_K
    const X32_BIT: u32 = 0x4000_0000;
    const RET_ERRNO: u32 = 0x0005_0000;
    const RET_ALLOW: u32 = 0x7fff_0000;
    let op = |code, jt, jf, k| seccompiler::sock_filter { code, jt, jf, k };
    vec![
        op(LD_W_ABS, 0, 0, 0), // seccomp_data.nr
        op(JGE_K, 0, 1, X32_BIT),
        op(RET_K, 0, 0, RET_ERRNO | enosys),
        op(RET_K, 0, 0, RET_ALLOW),
    ]
}

/// A program as the bytes `bwrap --add-seccomp-fd` reads (`struct sock_filter` in native byte order).
pub fn to_bytes(program: &BpfProgram) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(program.len() * 8);
    for instruction in program {
        bytes.extend_from_slice(&instruction.code.to_ne_bytes());
        bytes.push(instruction.jt);
        bytes.push(instruction.jf);
        bytes.extend_from_slice(&instruction.k.to_ne_bytes());
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_compile_for_both_network_settings() {
        for network in [false, true] {
            let programs = programs(network).unwrap();
            assert_eq!(
                programs.len(),
                if cfg!(target_arch = "x86_64") { 3 } else { 2 }
            );
            assert!(programs.iter().all(|p| !p.is_empty()));
            assert_eq!(to_bytes(&programs[0]).len(), programs[0].len() * 8);
        }
    }
}
