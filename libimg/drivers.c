/* SPDX-License-Identifier: MIT */
/* The format driver table, in probe order.  Adding a format: one line. */
#include "driver.h"

/* The Makefile defines IMG_HAVE_DRIVER_<FMT> for every driver it builds:
 * those are referenced strongly, so linking libimg.a pulls them in.  The
 * others are weak, and a driver that is not linked in leaves a NULL entry,
 * which the core skips. */
#ifdef IMG_HAVE_DRIVER_VDI
extern const struct img_driver img_driver_vdi;
#else
extern const struct img_driver img_driver_vdi __attribute__((weak));
#endif
#ifdef IMG_HAVE_DRIVER_VHD
extern const struct img_driver img_driver_vhd;
#else
extern const struct img_driver img_driver_vhd __attribute__((weak));
#endif
#ifdef IMG_HAVE_DRIVER_VMDK
extern const struct img_driver img_driver_vmdk;
#else
extern const struct img_driver img_driver_vmdk __attribute__((weak));
#endif
#ifdef IMG_HAVE_DRIVER_VHDX
extern const struct img_driver img_driver_vhdx;
#else
extern const struct img_driver img_driver_vhdx __attribute__((weak));
#endif
#ifdef IMG_HAVE_DRIVER_RAW
extern const struct img_driver img_driver_raw;
#else
extern const struct img_driver img_driver_raw __attribute__((weak));
#endif

const struct img_driver *const img_drivers[IMG_NDRIVERS] = {
	&img_driver_vdi,  &img_driver_vhd, &img_driver_vmdk,
	&img_driver_vhdx, &img_driver_raw, /* last: it matches anything */
};
