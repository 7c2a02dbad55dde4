#include "CFUSEKernel.h"
#include <sys/ioctl.h>

int snapfs_fuse_backing_open(int devfd, int fd) {
    struct fuse_backing_map map = { .fd = fd, .flags = 0, .padding = 0 };
    return ioctl(devfd, FUSE_DEV_IOC_BACKING_OPEN, &map);
}

int snapfs_fuse_backing_close(int devfd, int32_t id) {
    uint32_t value = (uint32_t)id;
    return ioctl(devfd, FUSE_DEV_IOC_BACKING_CLOSE, &value);
}

/* The ioctl numbers the kernel defines (whether <linux/fuse.h> or CFUSEKernel.h spelled them). */
_Static_assert(FUSE_DEV_IOC_BACKING_OPEN == 0x4010e501, "FUSE_DEV_IOC_BACKING_OPEN");
_Static_assert(FUSE_DEV_IOC_BACKING_CLOSE == 0x4004e502, "FUSE_DEV_IOC_BACKING_CLOSE");
