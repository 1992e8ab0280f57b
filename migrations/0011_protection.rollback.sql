DROP TABLE mirrored_objects;
