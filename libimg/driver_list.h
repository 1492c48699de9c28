/* SPDX-License-Identifier: MIT */
/*
 * The format drivers, in probe order: IMG_DRIVER(name) for the driver
 * formats/<name>/ defines as img_driver_<name>.  Adding a format is one
 * line here.  Included with IMG_DRIVER defined (driver.h, drivers.c).
 */
IMG_DRIVER(vdi)
IMG_DRIVER(vhd)
IMG_DRIVER(vmdk)
IMG_DRIVER(qcow2)
IMG_DRIVER(vhdx)
IMG_DRIVER(raw) /* last: it matches anything */
