/**
 * USB/IP constants, named as the Linux kernel names them, each with the file it comes from.
 * Only what the client core needs once a device is attached to vhci_hcd (the URB traffic), plus the
 * values that vhci's sysfs files print.
 */

// ---------------------------------------------------------------------------------------------------
// Commands and directions
// ---------------------------------------------------------------------------------------------------

/** kernel: drivers/usb/usbip/usbip_common.h — vhci_hcd → us: submit a URB. */
export const USBIP_CMD_SUBMIT = 0x00000001;
/** kernel: drivers/usb/usbip/usbip_common.h — vhci_hcd → us: cancel a URB submitted earlier. */
export const USBIP_CMD_UNLINK = 0x00000002;
/** kernel: drivers/usb/usbip/usbip_common.h — us → vhci_hcd: a URB's result. */
export const USBIP_RET_SUBMIT = 0x00000003;
/** kernel: drivers/usb/usbip/usbip_common.h — us → vhci_hcd: the result of a CMD_UNLINK. */
export const USBIP_RET_UNLINK = 0x00000004;

/** kernel: drivers/usb/usbip/usbip_common.h */
export const USBIP_DIR_OUT = 0x00;
/** kernel: drivers/usb/usbip/usbip_common.h */
export const USBIP_DIR_IN = 0x01;

/** The name of a command code, for messages (`USBIP_CMD_SUBMIT`), or undefined for an unknown code. */
export function usbipCommandName(command: number): string | undefined {
  switch (command) {
    case USBIP_CMD_SUBMIT:
      return 'USBIP_CMD_SUBMIT';
    case USBIP_CMD_UNLINK:
      return 'USBIP_CMD_UNLINK';
    case USBIP_RET_SUBMIT:
      return 'USBIP_RET_SUBMIT';
    case USBIP_RET_UNLINK:
      return 'USBIP_RET_UNLINK';
    default:
      return undefined;
  }
}

// ---------------------------------------------------------------------------------------------------
// Sizes and limits
// ---------------------------------------------------------------------------------------------------

/** kernel: drivers/usb/usbip/usbip_common.h — sizeof(struct usbip_header): every command's header. */
export const USBIP_HEADER_SIZE = 48;

/** kernel: drivers/usb/usbip/usbip_common.h — sizeof(struct usbip_iso_packet_descriptor). */
export const USBIP_ISO_PACKET_DESCRIPTOR_SIZE = 16;

/** The setup packet inside CMD_SUBMIT (`unsigned char setup[8]`). */
export const USB_SETUP_PACKET_SIZE = 8;

/**
 * kernel: drivers/usb/usbip/usbip_common.h — most isochronous packets in one URB (stub_rx.c refuses
 * more). We apply the same bound before reading the descriptors that follow an ISO CMD_SUBMIT.
 */
export const USBIP_MAX_ISO_PACKETS = 1024;

/**
 * Documentation/usb/usbip_protocol.rst: number_of_packets "shall be set to 0xffffffff if not ISO
 * transfer". The field is `__s32`, so this is -1 once decoded. Linux's own vhci_tx.c sends
 * `urb->number_of_packets` instead, which is 0 for every non-ISO URB, so decoders accept both.
 */
export const USBIP_NUMBER_OF_PACKETS_NON_ISO = -1;

/**
 * Ours, not the kernel's: the largest transfer_buffer_length a CMD_SUBMIT may carry (4 MiB).
 * It equals the daemon protocol's per-URB data limit (server/protocol/constants.ts MAX_URB_DATA), so a
 * bigger URB could not be forwarded anyway; kernel drivers stay far below it (usb-storage ≤ 1 MiB).
 * usbfs (libusb programs) may legally submit up to `usbfs_memory_mb` (16 MiB by default) in one URB;
 * such a program would lose the device here. Raise both limits together if that ever matters.
 * The decoder checks every length against this before it buffers or allocates anything.
 */
export const MAX_TRANSFER_BUFFER_LENGTH = 4 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------------
// transfer_flags
// ---------------------------------------------------------------------------------------------------

/** kernel: include/uapi/linux/usbip.h — the URB flags as USB/IP carries them (a stable mapping of URB_*). */
export const USBIP_URB_SHORT_NOT_OK = 0x0001;
export const USBIP_URB_ISO_ASAP = 0x0002;
export const USBIP_URB_NO_TRANSFER_DMA_MAP = 0x0004;
export const USBIP_URB_ZERO_PACKET = 0x0040;
export const USBIP_URB_NO_INTERRUPT = 0x0080;
export const USBIP_URB_FREE_BUFFER = 0x0100;
export const USBIP_URB_DIR_IN = 0x0200;
export const USBIP_URB_DIR_OUT = 0;
export const USBIP_URB_DIR_MASK = USBIP_URB_DIR_IN;

// ---------------------------------------------------------------------------------------------------
// device state on the exporting side
// ---------------------------------------------------------------------------------------------------

/** kernel: include/uapi/linux/usbip.h — enum usbip_device_status (stub side). */
export const SDEV_ST_AVAILABLE = 0x01;
export const SDEV_ST_USED = 0x02;
export const SDEV_ST_ERROR = 0x03;
// vhci's port states (VDEV_ST_*) and the device speeds its attach takes (USB_SPEED_*) are the helper's,
// which owns vhci's sysfs files: helper/vhci.ts and helper/validate.ts.

// The errno values RET_SUBMIT / RET_UNLINK carry in `status` are UrbStatus (server/protocol/urb.ts):
// one vocabulary for the whole path, from the bench's USB stack to vhci_hcd.
