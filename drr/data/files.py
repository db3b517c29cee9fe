"""File-name conventions of the folder datasets, without torch: the workflow's up-front data check
(drr.data.check) imports them when every Snakemake job parses the workflow."""

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")              # ImageNet class folders (drr.data.imagenet)
CAPTION_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")  # img2dataset output (drr.data.captions)


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)
