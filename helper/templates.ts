// Text of the files `remote-usb-helper install` writes: the polkit action, the optional polkit rule and
// the launcher. Pure string builders; the values they embed were validated by validate.ts (plain
// absolute paths, POSIX-like group names) and are escaped for their language anyway.

/** One action for every verb: pkexec maps a program (exec.path) to exactly one action. */
export const ACTION_ID = 'dev.remoteusb.helper.attach';
/** First line(s) of every file we write; uninstall only removes files that carry it. */
export const MARKER = 'Remote USB: written by remote-usb-helper install';

export const LAUNCHER_NAME = 'remote-usb-helper';
export const HELPER_JS_NAME = 'helper.js';
export const MANIFEST_NAME = 'install.json';

function xmlText(s: string): string {
  return s.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** /usr/share/polkit-1/actions/dev.remoteusb.helper.policy */
export function policyXml(launcherPath: string): string {
  return `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE policyconfig PUBLIC "-//freedesktop//DTD PolicyKit Policy Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/PolicyKit/1/policyconfig.dtd">
<!-- ${MARKER}; removed by remote-usb-helper uninstall. -->
<policyconfig>
  <vendor>Remote USB</vendor>
  <action id="${ACTION_ID}">
    <description>Attach or detach a remote USB device through the kernel's USB/IP client (vhci_hcd)</description>
    <message>Authentication is required to attach or detach a remote USB device</message>
    <defaults>
      <allow_any>no</allow_any>
      <allow_inactive>no</allow_inactive>
      <allow_active>auth_admin_keep</allow_active>
    </defaults>
    <annotate key="org.freedesktop.policykit.exec.path">${xmlText(launcherPath)}</annotate>
    <annotate key="org.freedesktop.policykit.exec.allow_gui">true</annotate>
  </action>
</policyconfig>
`;
}

/** The launcher path a policy file written by policyXml names, or undefined. */
export function policyExecPath(xml: string): string | undefined {
  const m = /<annotate key="org\.freedesktop\.policykit\.exec\.path">([^<]*)<\/annotate>/.exec(xml);
  return m ? m[1].replace(/&#([0-9]+);/g, (_, n: string) => String.fromCharCode(Number(n))) : undefined;
}

/** /etc/polkit-1/rules.d/49-remote-usb.rules (only with `install --group`). YES only for a member of the
 *  group in an active local session (at the machine's seat); anything else falls through to the action's
 *  defaults (an administrator password for an active local session, no for every other session). */
export function rulesJs(group: string): string {
  const g = JSON.stringify(group);
  return `// ${MARKER} --group ${group}; removed by remote-usb-helper uninstall.
// Members of group ${g} may run the Remote USB helper (attach/detach a vhci_hcd port, load vhci-hcd)
// through pkexec without a password, but only from an active local session (the one at the seat).
// Other sessions (ssh, inactive, remote) get the action's defaults. The helper itself lets a user
// detach only the ports that user attached.
polkit.addRule(function (action, subject) {
    if (action.id == ${JSON.stringify(ACTION_ID)} && subject.active && subject.local && subject.isInGroup(${g})) {
        return polkit.Result.YES;
    }
});
`;
}

/** <dir>/remote-usb-helper: the program pkexec runs. Its interpreter is the checked, root-owned node. */
export function launcherScript(nodePath: string, helperJsPath: string): string {
  return `#!${nodePath}
// ${MARKER}; removed by remote-usb-helper uninstall.
// Runs the privileged Remote USB helper installed next to this file (see its README).
'use strict';
require(${JSON.stringify(helperJsPath)});
`;
}

export function hasMarker(text: string): boolean {
  return text.slice(0, 512).includes(MARKER);
}
