//! Sandbox, Landlock backend (the fallback where bubblewrap cannot run): the whole filesystem read-only but for
//! the writable roots, TCP off when the network is, no signals to or abstract sockets of processes outside.
//! Weaker than bubblewrap — a path inside a writable root cannot be made read-only, so the worktree's `.git`
//! pointer stays writable (ccfan checks and restores it before it runs git), and the host's processes stay visible.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr,
    RulesetCreatedAttr, Scope, path_beneath_rules,
};

/// The newest Landlock ABI ccfan asks for (best effort below it).
const ABI_WANTED: ABI = ABI::V6;

/// Device files every process may write.
/// (No terminal: a worker with a tty could push input into someone's shell with TIOCSTI.)
const DEVICES: &[&str] = &["/dev/null", "/dev/zero", "/dev/full"];

/// The kernel's Landlock ABI version, or why Landlock cannot be used.
pub fn abi_version() -> Result<i64, String> {
    const CREATE_RULESET_VERSION: libc::c_uint = 1;
    #[expect(
        unsafe_code,
        reason = "a raw syscall; libc has no wrapper for landlock_create_ruleset"
    )]
    // SAFETY: with a null attribute pointer, size 0 and the VERSION flag, the kernel only returns a number.
    let version = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0_usize,
            CREATE_RULESET_VERSION,
        )
    };
    if version >= 1 {
        Ok(version)
    } else {
        let error = std::io::Error::last_os_error();
        Err(match error.raw_os_error() {
            Some(libc::ENOSYS) => "the kernel was built without Landlock".to_string(),
            Some(libc::EOPNOTSUPP) => {
                "Landlock is disabled at boot (add `landlock` to the kernel's `lsm=` list)"
                    .to_string()
            }
            _ => format!("Landlock is unavailable: {error}"),
        })
    }
}

/// Builds the ruleset in the parent (where allocating is safe); the child only calls `restrict`.
pub fn ruleset(writable: &[PathBuf], network: bool) -> Result<OwnedFd, String> {
    let abi = ABI_WANTED;
    let text = |error: landlock::RulesetError| error.to_string();
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(abi))
        .map_err(text)?
        .scope(Scope::AbstractUnixSocket | Scope::Signal)
        .map_err(text)?;
    if !network {
        ruleset = ruleset
            .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)
            .map_err(text)?;
    }
    let devices: Vec<&str> = DEVICES
        .iter()
        .copied()
        .filter(|path| std::path::Path::new(path).exists())
        .collect();
    let writable: Vec<&PathBuf> = writable.iter().filter(|path| path.exists()).collect();
    let created = ruleset
        .create()
        .map_err(text)?
        .add_rules(path_beneath_rules(["/"], AccessFs::from_read(abi)))
        .map_err(text)?
        .add_rules(path_beneath_rules(
            devices,
            AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::ReadDir,
        ))
        .map_err(text)?
        .add_rules(path_beneath_rules(
            writable,
            AccessFs::from_all(abi) & !(AccessFs::MakeChar | AccessFs::MakeBlock),
        ))
        .map_err(text)?;
    let fd: Option<OwnedFd> = created.into();
    fd.ok_or_else(|| "the kernel does not enforce Landlock".to_string())
}

/// Drops every capability (bounding, ambient, effective, permitted, inheritable), then applies the ruleset `fd` to
/// the calling process. Runs between fork and exec: only raw syscalls, structs on the stack.
pub fn restrict(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    #[repr(C)]
    struct CapHeader {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    struct CapData {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const CAP_VERSION_3: u32 = 0x2008_0522;
    #[expect(unsafe_code, reason = "raw syscalls between fork and exec")]
    // SAFETY: prctl, capset and landlock_restrict_self take integers or pointers to the stack values above; the
    // ruleset fd stays open until the spawn returns.
    unsafe {
        for cap in 0..64 {
            // EINVAL past the kernel's last capability; nothing to drop there.
            libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0);
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
        let header = CapHeader {
            version: CAP_VERSION_3,
            pid: 0,
        };
        let data = [
            CapData {
                effective: 0,
                permitted: 0,
                inheritable: 0,
            },
            CapData {
                effective: 0,
                permitted: 0,
                inheritable: 0,
            },
        ];
        if libc::syscall(libc::SYS_capset, &raw const header, data.as_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::syscall(libc::SYS_landlock_restrict_self, fd, 0_u32) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
