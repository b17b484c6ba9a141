// The fixed paths the helper uses at run time. Only cli.ts passes these to the modules; no environment
// variable or flag can change them (install's --dir/--node are validated and used by install only).

/** The first vhci_hcd controller; its status files list the ports of every controller. */
export const SYSFS_VHCI = '/sys/devices/platform/vhci_hcd.0';
export const PROC_SELF_FD = '/proc/self/fd';
export const PROC_NET_UNIX = '/proc/net/unix';

/** Absolute path, fixed argv, no shell, minimal environment. (/sbin is /usr/sbin on merged-/usr systems.) */
export const MODPROBE = '/sbin/modprobe';
export const MODPROBE_ARGS: readonly string[] = ['vhci-hcd'];
export const MODPROBE_ENV: Readonly<Record<string, string>> = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' };

export const DEFAULT_INSTALL_DIR = '/usr/local/libexec/remote-usb';
export const POLICY_PATH = '/usr/share/polkit-1/actions/dev.remoteusb.helper.policy';
export const RULES_PATH = '/etc/polkit-1/rules.d/49-remote-usb.rules';
export const PKEXEC = '/usr/bin/pkexec';
/** Who attached which vhci port (owners.ts): root-only, 0700, on /run's tmpfs (emptied at boot, like vhci). */
export const OWNERS_DIR = '/run/remote-usb-helper';
export const ETC_GROUP = '/etc/group';
