"""The embedded synthetic world, written in the COCO 2014 / VQA v2 file formats (`world.generate`)."""
