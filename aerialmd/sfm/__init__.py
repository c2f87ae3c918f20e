"""Structure from motion with known aerial poses: pairs from poses, features, matching, triangulation, registration of
photos at metric scale."""
